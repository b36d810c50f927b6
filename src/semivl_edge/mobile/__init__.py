"""Android benchmarking over adb: device discovery, benchmark binaries, timing parsers."""
