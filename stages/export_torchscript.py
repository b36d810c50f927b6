"""DVC stage `export_torchscript`: `python stages/export_torchscript.py --help` says what it does; the work is in semivl_edge.pipeline.export_torchscript."""
from semivl_edge.pipeline import export_torchscript, main

if __name__ == "__main__":
    main(export_torchscript)
