"""benchmarks/speed.py: the --quick run works end to end, and an entry is one function."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


def load_speed_module():
    spec = importlib.util.spec_from_file_location("textvae_speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_every_entry_and_the_ratios_last(tmp_path, capsys):
    """``speed.py --quick`` through its own main(): the whole CLI path (the trainer on the
    embedded corpus included), without a second interpreter start (importing torch and
    transformers again costs more than the run)."""
    out = tmp_path / "speed.json"
    speed = load_speed_module()
    assert speed.main(["--quick", "--threads", "1", "--device", "cpu", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    for name in speed.ENTRIES:
        assert any(line.startswith(name) for line in lines), name
    ratios = [line.split()[0] for line in lines if " / " in line[:30]]
    assert ratios == ["invlip", "textvae", "trainer"]  # invlip / concat, concat / reference, trainer last
    assert lines[-1].startswith("trainer / reference") and "target >= 0.8" in lines[-1]
    record = json.loads(out.read_text())
    results = record["runs"]["cpu"]["results"]
    assert set(results) == {*speed.ENTRIES, speed.TRAINER}
    assert results[speed.TRAINER]["tokens_per_s"] > 0
    assert all(r["tokens_per_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"]
               for name, r in results.items() if name != speed.TRAINER)


def test_script_runs_as_a_program():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--quick" in result.stdout


def test_unknown_entry_is_refused(capsys):
    assert load_speed_module().main(["--quick", "--only", "no such entry"]) == 2
    assert "unknown entries" in capsys.readouterr().err


def test_a_new_entry_is_one_function():
    speed = load_speed_module()
    calls = []

    @speed.entry("counting entry")
    def counting(setup):
        assert setup.input_ids.shape[0] == 3

        def step():
            calls.append(1)

        return step

    sizes = speed.Sizes.quick()
    ids, mask = speed.make_batch(sizes, 3, torch.device("cpu"))
    setup = speed.Setup(sizes=sizes, device=torch.device("cpu"), input_ids=ids, attention_mask=mask)
    results = speed.run(setup, ["counting entry"], warmup=2, steps=4)
    assert len(calls) == 6  # warm-up steps run but only the timed ones are measured
    assert results["counting entry"]["tokens_per_s"] > 0
    assert setup.num_tokens == int(mask[:, 1:].sum())


def test_benchmark_batch_is_well_formed():
    speed = load_speed_module()
    sizes = speed.Sizes()
    ids, mask = speed.make_batch(sizes, 32, torch.device("cpu"))
    lengths = mask.sum(1) - 2  # words per sentence
    assert bool((ids[:, 0] == 1).all())
    assert bool((ids[torch.arange(32), mask.sum(1) - 1] == 2).all())  # <eos> last
    assert bool((ids[mask == 0] == 0).all())  # right-padded with <pad>
    assert 17 <= float(lengths.float().mean()) <= 25  # PTB-like: ~21 words, ~22 predicted tokens
