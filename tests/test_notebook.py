"""examples/colab.ipynb runs top to bottom on the CPU (without its install and Colab-only cells)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "colab.ipynb"
SKIPPED_TAGS = {"install", "colab-only"}


def test_colab_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    skipped = [c for c in nb.cells if SKIPPED_TAGS & set(c.metadata.get("tags", []))]
    assert len(skipped) == 2  # the install cell and %tensorboard, nothing else
    nb.cells = [c for c in nb.cells if c not in skipped]
    env_cwd = os.getcwd()
    try:
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
    finally:
        os.chdir(env_cwd)
    outputs = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "backend: cpu" in outputs
    assert "val_accuracy" in outputs and "best epoch" in outputs
    assert (tmp_path / "runs" / "colab_cnn" / "report.md").is_file()
    assert (tmp_path / "runs" / "main_smoke" / "report.md").is_file()
    assert list((tmp_path / "runs" / "colab_cnn" / "tensorboard").glob("events.out.tfevents.*"))
