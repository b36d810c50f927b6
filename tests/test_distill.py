"""The distilled student (model/student.py) and its losses (distill/): what each term measures, that one step on
a fixed batch lowers each of them, the open class set, saving and loading, ImageNet weights."""
import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from semivl_edge.distill.loop import DistillConfig, distillation_terms
from semivl_edge.distill.losses import image_distillation, pixel_distillation, region_distillation
from semivl_edge.errors import PipelineError
from semivl_edge.model.io import load_model, save_model
from semivl_edge.model.student import LanguageStudent, StudentConfig, build_student

from conftest import build_tiny_segmenter

CLASSES, CROP = 4, 32


def config(**changes):
    return DistillConfig(**{"iterations": 1, "batch_size": 2, "lr": 1e-3, "weight_decay": 0.0, "poly_power": 0.9,
                            "temperature": 1.0, "pixel_weight": 1.0, "region_weight": 1.0, "image_weight": 1.0,
                            "cutmix_prob": 0.0, "seed": 0, **changes})


def tiny_student(embed_dim: int) -> LanguageStudent:
    torch.manual_seed(0)
    return build_student(StudentConfig(embed_dim=embed_dim, num_classes=CLASSES, head_channels=16))


@pytest.fixture(scope="module")
def teacher():
    return build_tiny_segmenter(CLASSES, crop=CROP)


def test_pixel_term_is_zero_for_the_teachers_own_logits_and_counts_only_valid_pixels():
    teacher_logits = torch.randn(2, CLASSES, 8, 8, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 8, 8)
    assert float(pixel_distillation(teacher_logits, teacher_logits, valid, 2.0)) == pytest.approx(0.0, abs=1e-6)
    student_logits = teacher_logits.clone()
    student_logits[1] = 0.0  # wrong only in image 1
    valid[1] = 0.0  # ... which is all padding
    assert float(pixel_distillation(student_logits, teacher_logits, valid, 1.0)) == pytest.approx(0.0, abs=1e-6)
    valid[1] = 1.0
    assert float(pixel_distillation(student_logits, teacher_logits, valid, 1.0)) > 0.01


def test_region_term_compares_class_relations_not_the_features_themselves():
    generator = torch.Generator().manual_seed(0)
    teacher_logits = torch.randn(2, CLASSES, 8, 8, generator=generator) * 3
    features = torch.randn(2, 6, 8, 8, generator=generator)
    valid = torch.ones(2, 8, 8)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    rotated = torch.einsum("de,behw->bdhw", rotation, features)  # same cosines between prototypes
    assert float(region_distillation(rotated, features, teacher_logits, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(region_distillation(torch.randn(2, 6, 8, 8, generator=generator), features, teacher_logits,
                                     valid)) > 1e-3


def test_image_term_is_the_l1_of_the_image_averaged_logits():
    student, teacher = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    teacher[0, 0] = 4.0  # class 0: mean 4 vs 0
    teacher[0, 1, 0, 0] = 2.0  # class 1: mean 0.5 vs 0
    assert float(image_distillation(student, teacher, torch.ones(1, 2, 2))) == pytest.approx(4.5)


class Sharpened(torch.nn.Module):
    """The random teacher with confident logits: its class regions differ, so their relations are not all 1."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def encode(self, images):
        return self.network.encode(images)

    def decode(self, features, text, size):
        return 50.0 * self.network.decode(features, text, size)


@pytest.mark.parametrize("term", ["supervised", "pixel", "region", "image"])
def test_one_step_on_a_fixed_batch_lowers_each_term(teacher, term):
    network, cfg, text = teacher
    network = Sharpened(network)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, CROP, CROP, generator=generator)
    labels = torch.randint(0, CLASSES, (2, CROP, CROP), generator=generator)
    valid = torch.ones(4, CROP, CROP)
    student = tiny_student(int(cfg.embed_dim))
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)
    before = distillation_terms(student, network, text, images, images, valid, labels, config())[term]
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = distillation_terms(student, network, text, images, images, valid, labels, config())[term]
    assert before.item() > 1e-6 and after.item() < before.item(), term


def test_the_class_set_is_the_rows_of_the_text_embeddings():
    student = tiny_student(8).eval()
    text = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    image = torch.randn(1, 3, CROP, CROP, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = student(image, text)
        order = torch.tensor([3, 0, 4, 1, 2])
        torch.testing.assert_close(student(image, text[order]), logits[:, order])  # a reordered class set
        torch.testing.assert_close(student(image, text[:2]), logits[:, :2])  # fewer classes
        renamed = text.clone()  # class 2 under another name whose embedding is class 0's: masks follow the text
        renamed[2] = text[0]
        assert torch.equal(student(image, renamed)[:, 2], logits[:, 0])


def test_saved_student_loads_as_itself(tmp_path):
    student = tiny_student(8).eval()
    text = F.normalize(torch.randn(CLASSES, 8), dim=-1)
    save_model(tmp_path / "student", student, student.cfg, text)
    loaded, cfg, loaded_text = load_model(tmp_path / "student.safetensors")
    assert isinstance(loaded, LanguageStudent) and cfg == student.cfg and torch.equal(loaded_text, text)
    image = torch.randn(1, 3, CROP, CROP)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, text), student(image, text), rtol=0, atol=0)


def test_imagenet_weights_load_strictly_from_a_torchvision_state_dict(tmp_path):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(5)
    reference = mobilenet_v3_large(weights=None)  # the classifier is in the file too, and dropped
    path = tmp_path / "mobilenet_v3_large.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    student = build_student(StudentConfig(embed_dim=8, num_classes=CLASSES, imagenet_weights=str(path)))
    first = student.low[0][0].weight
    assert torch.equal(first, reference.features[0][0].weight)
    assert torch.equal(student.high[-1][0].weight, reference.features[-1][0].weight)

    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.0.weight": torch.zeros(3, 3, 3, 3)}, str(wrong))
    with pytest.raises(PipelineError, match="wrong.safetensors: not a torchvision mobilenet_v3_large"):
        build_student(StudentConfig(embed_dim=8, num_classes=CLASSES, imagenet_weights=str(wrong)))


def test_a_student_config_with_an_unknown_backbone_is_refused():
    with pytest.raises(PipelineError, match="distill.backbone"):
        StudentConfig(embed_dim=8, num_classes=2, backbone="resnet18")
    with pytest.raises(PipelineError, match="unknown key"):
        StudentConfig.from_dict({"embed_dim": 8, "num_classes": 2, "width": 3})
    assert copy.deepcopy(StudentConfig(embed_dim=8, num_classes=2)).to_dict()["pixel_mean"] == [0.485, 0.456, 0.406]
