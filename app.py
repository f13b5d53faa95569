"""Hugging Face Space entry point: build the UI and serve it. Everything else lives in the `rlhf` library."""

from rlhf.ui import launch

if __name__ == "__main__":
    launch()
