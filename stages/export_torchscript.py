"""DVC stage `export_torchscript`: see `python stages/export_torchscript.py --help`; the work is done in semivl_edge.pipeline.export_torchscript."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("export_torchscript")
