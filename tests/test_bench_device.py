"""bench/device.py runs on a CPU at its tiny size: the GPU run is prepared, not discovered on the GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_device_bench_runs_on_the_cpu_at_its_tiny_size(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("device_bench", ROOT / "bench" / "device.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench/device.py", "--tiny", "--threads", "1"])
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    assert "32x32" in lines[0] and "no CUDA device" in lines[1]
    rates = {line[:20].strip(): float(line[20:31]) for line in lines[2:5]}
    assert set(rates) == {"training", "attack scoring", "gradient alignment"}
    assert all(rate > 0 for rate in rates.values()), rates
