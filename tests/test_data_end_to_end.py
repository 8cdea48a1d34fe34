"""``fl-mia run configs/data/<layout>.toml --set data.path=DIR`` on datasets written by nibabel,
Pillow and NumPy (not by fl-mia): training, attacks and the report, through the real CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from tests.disk_datasets import write_folder, write_msd, write_nnunet, write_npz

WRITERS = {
    "msd": lambda root: write_msd(root / "msd"),
    "nnunet": lambda root: write_nnunet(root / "nn", channels=2),
    "folder": lambda root: write_folder(root / "kvasir", images=24),
    "npz": lambda root: write_npz(root / "d.npz", patients=12),
}
TINY = [
    "data.image_size=32", "federation.num_hospitals=2", "federation.rounds=2", "federation.attacker_patients=4",
    "training.local_epochs=1", "attacker.shadows.epochs=1",
]


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_run_on_a_dataset_from_disk_trains_attacks_and_reports(layout, tmp_path):
    path = WRITERS[layout](tmp_path)
    settings = [f'data.path="{path}"', f'data.cache_dir="{tmp_path / "cache"}"', *TINY]
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", f"configs/data/{layout}.toml", *sum((["--set", s] for s in settings), []), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_completed"] == 2
    assert 0.0 <= metrics["utility"]["dice"] <= 1.0
    assert metrics["privacy"], "no attack scored"
    assert (out / "keep.npy").is_file() or any(out.rglob("keep.npy"))
