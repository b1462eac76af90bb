"""The cost model: a calibration of this machine (seconds per call of each patch pair, guided and not), cached by
model architecture, size, dtype and device, and the seconds it predicts for each stage of a schedule."""

import contextlib
import json
import threading
from dataclasses import replace

import pytest
import torch

from lumina_core import cost
from lumina_core.cost import CallCosts, CostKey, calibrate, calibration_for, predict, predicted_seconds
from lumina_core.model import NextDiT, NextDiTConfig
from lumina_core.sampling import SampleConfig
from lumina_core.schedule import time_grid, value_at

KEY = CostKey("abc", "float32", "test device", (1, 16, 12, 32, 32), 32)
# Seconds per call, made up so every term of a prediction is told apart.
COSTS = CallCosts(KEY, guided={"2x4": 1.0, "2x2": 3.0, "1x2": 10.0}, unguided={"2x4": 0.5, "2x2": 1.25, "1x2": 4.0})


@pytest.fixture(scope="module")
def small_model():
    """Official patch pairs (2x4, 2x2, 1x2) at a tiny width, 16 latent channels."""
    torch.manual_seed(0)
    return NextDiT(NextDiTConfig(in_channels=16, dim=64, n_layers=1, n_heads=2, n_kv_heads=1, cap_feat_dim=24,
                                 multiple_of=16)).eval()


@pytest.mark.parametrize("preset", ["f24F96R960-MultiScale", "f16F64R512-MultiScale"])
def test_prediction_sums_each_call_at_its_patch_pair_and_guidance(preset):
    """cfg (20, (0.2, 0)) / (12, (0.4, 0)): calls before t = 0.2 / 0.4 are guided (two rows), later ones not."""
    config = SampleConfig.preset(preset)
    switch = config.cfg[1][0]
    grid = time_grid(config.steps, config.shift).tolist()
    expected = {stage.patch: [0, 0.0] for stage in config.stages}
    for t in grid[:-1]:
        stage = next(s for s in config.stages if s.t_start <= t < s.t_end)
        table = COSTS.guided if t < switch else COSTS.unguided
        expected[stage.patch][0] += 1
        expected[stage.patch][1] += table[stage.patch]
    stages = predict(config, COSTS)
    assert [s.stage for s in stages] == list(config.stages)
    assert {s.stage.patch: [s.calls, pytest.approx(s.seconds)] for s in stages} == expected
    assert predicted_seconds(config, COSTS) == pytest.approx(sum(seconds for _, seconds in expected.values()))
    unguided = replace(config, cfg=0.0)
    assert predicted_seconds(unguided, COSTS) < predicted_seconds(config, COSTS)


def test_an_uncalibrated_patch_pair_is_named():
    config = SampleConfig.from_official({"P": ["2x4", [0.5, "1x1"]], "step": 5, "ts": 0})
    with pytest.raises(ValueError, match="no calibration for patch pair 1x1 .*calibrated: 2x4, 2x2, 1x2"):
        predict(config, COSTS)


def test_calibration_times_every_pair_that_fits_the_latent_and_leaves_the_rng_alone(small_model):
    state = torch.get_rng_state()
    costs = calibrate(small_model, (1, 16, 4, 8, 8), 12, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state)
    assert set(costs.guided) == set(costs.unguided) == {"2x4", "2x2", "1x2"}
    assert all(seconds > 0 for seconds in [*costs.guided.values(), *costs.unguided.values()])
    cpu = cost.device_name(torch.device("cpu"))
    assert costs.key == CostKey(cost.architecture_hash(small_model.config), "float32", cpu, (1, 16, 4, 8, 8), 12)
    odd_frames = calibrate(small_model, (1, 16, 3, 8, 8), 12, torch.device("cpu"))  # f-patch 2 does not divide 3
    assert set(odd_frames.guided) == {"1x2"}


def test_calibration_counts_two_rows_when_guided(small_model):
    rows = []
    handle = small_model.register_forward_hook(lambda module, args, out: rows.append((args[0].shape[0], args[5])))
    try:
        calibrate(small_model, (1, 16, 4, 8, 8), 12, torch.device("cpu"), pairs=[(2, 1)])
    finally:
        handle.remove()
    assert rows == [(2, 2), (2, 2), (1, 2)]  # warm-up, timed guided, timed unguided


def test_calibration_reads_the_given_clock_around_each_timed_call(small_model):
    """A clock that advances 0.25 s per read: every call measures 0.25 s, warm-up calls are read but not kept, and
    ``repeats`` timed calls give their median."""
    reads = []

    def clock():
        reads.append(len(reads))
        return 0.25 * len(reads)

    costs = calibrate(small_model, (1, 16, 4, 8, 8), 12, torch.device("cpu"), pairs=[(2, 1), (4, 2)], repeats=3,
                      clock=clock)
    assert costs.guided == costs.unguided == {"1x2": 0.25, "2x4": 0.25}
    assert len(reads) == 2 * 2 * (cost.WARMUP_CALLS + 2 * 3)  # two reads per call, 7 calls per pair
    with pytest.raises(ValueError, match="repeats 0 is below 1"):
        calibrate(small_model, (1, 16, 4, 8, 8), 12, torch.device("cpu"), repeats=0)


def test_the_key_follows_architecture_size_caption_and_dtype_not_weights(small_model):
    cpu = torch.device("cpu")
    torch.manual_seed(1)
    retrained = NextDiT(NextDiTConfig.from_dict(small_model.config.to_dict())).eval()  # its own equal config
    assert retrained.config is not small_model.config
    assert not torch.equal(retrained.layers[0].attention.wq.weight, small_model.layers[0].attention.wq.weight)
    assert CostKey.of(retrained, (1, 16, 4, 8, 8), 12, cpu) == CostKey.of(small_model, (1, 16, 4, 8, 8), 12, cpu)
    wider = NextDiT(replace(small_model.config, dim=96, n_heads=3, n_kv_heads=1)).eval()
    assert cost.architecture_hash(wider.config) != cost.architecture_hash(small_model.config)
    keys = {CostKey.of(small_model, (1, 16, 4, 8, 8), 12, cpu), CostKey.of(small_model, (1, 16, 4, 8, 16), 12, cpu),
            CostKey.of(small_model, (2, 16, 4, 8, 8), 12, cpu), CostKey.of(small_model, (1, 16, 4, 8, 8), 13, cpu),
            CostKey.of(NextDiT(small_model.config).to(torch.bfloat16), (1, 16, 4, 8, 8), 12, cpu)}
    assert len(keys) == 5


def test_a_calibration_is_paid_once_per_key(small_model, cache_dir, monkeypatch):
    config = SampleConfig.preset("f16F64R512-MultiScale")
    shape = (1, 16, 4, 8, 8)
    first, measured = calibration_for(small_model, shape, 12, torch.device("cpu"), config)
    assert measured and (cache_dir / cost.CALIBRATION_FILE).is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again although the cache holds this key")

    monkeypatch.setattr(cost, "calibrate", refuse)
    again, measured = calibration_for(small_model, shape, 12, torch.device("cpu"), config)
    assert not measured and again == first
    with pytest.raises(AssertionError, match="calibrated again"):
        calibration_for(small_model, (1, 16, 4, 8, 16), 12, torch.device("cpu"), config)


def test_the_cache_keeps_every_key_and_survives_a_damaged_file(cache_dir):
    other = replace(COSTS, key=replace(KEY, latent=(1, 16, 12, 64, 64)), measured_at=2.0)
    cost.store_calibration(COSTS)
    cost.store_calibration(other)
    cost.store_calibration(replace(COSTS, guided={**COSTS.guided, "1x2": 11.0}))  # the same key replaces its entry
    entries = cost.load_calibrations()
    assert len(entries) == 2 and cost.stored_calibration(KEY).guided["1x2"] == 11.0
    assert cost.stored_calibration(other.key) == other
    assert cost.latest_for("abc", (1, 16, 12, 64, 64)) == other
    assert cost.latest_for("abc", (1, 16, 12, 16, 16)) is None
    path = cache_dir / cost.CALIBRATION_FILE
    assert json.loads(path.read_text())["version"] == cost.CALIBRATION_FORMAT
    path.write_text("{not json")
    assert cost.load_calibrations() == [] and cost.stored_calibration(KEY) is None
    cost.store_calibration(COSTS)  # a damaged cache is rewritten, not an error
    assert cost.stored_calibration(KEY) == COSTS


@pytest.mark.parametrize("content", ["[]", "null", '"text"', "3", '{"version": 1, "entries": {}}',
                                     '{"version": 1}', "[" * 100_000, "\udcff"])
def test_a_cache_of_another_shape_counts_as_empty_and_is_rewritten(cache_dir, content):
    """A top level of [], null or text raised on every time-budget run (and made the plan route answer 500); a
    new calibration could not repair it, since storing reads the file first."""
    path = cache_dir / cost.CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, errors="surrogateescape")
    assert cost.load_calibrations() == [] and cost.latest_for("abc", KEY.latent) is None
    assert cost.store_calibration(COSTS) == path
    assert cost.load_calibrations() == [COSTS]


def test_a_damaged_entry_is_left_out_and_the_others_kept(cache_dir):
    other = replace(COSTS, key=replace(KEY, caption_tokens=64))
    cost.store_calibration(COSTS)
    cost.store_calibration(other)
    path = cache_dir / cost.CALIBRATION_FILE
    data = json.loads(path.read_text())
    good, bad = data["entries"]
    damaged = [{**bad, "guided": {"2x4": float("nan")}}, {**bad, "unguided": {"2x4": -1.0}}, {**bad, "key": 3},
               {**bad, "key": {**bad["key"], "latent": "1x16"}}, {**bad, "key": {**bad["key"], "dtype": None}},
               {**bad, "measured_at": "yesterday"}, 7, None]
    path.write_text(json.dumps({**data, "entries": [*damaged, good]}))  # json writes NaN as NaN, as a file may hold
    assert cost.load_calibrations() == [COSTS]


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, small_model, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cost.CALIBRATION_DIR_ENV, str(blocker / "lumina_video"))  # a folder even root cannot make
    config = SampleConfig.preset("f16F64R512-MultiScale")
    with caplog.at_level("WARNING", logger="lumina_core.cost"):
        costs, measured = calibration_for(small_model, (1, 16, 4, 8, 8), 12, torch.device("cpu"), config)
    assert measured and set(costs.guided) == {"2x4", "2x2", "1x2"}
    assert "is used for this run but not kept" in caplog.text and cost.CALIBRATION_DIR_ENV in caplog.text


def test_concurrent_writers_keep_both_entries(cache_dir, monkeypatch):
    """Writer A has read the file and is about to write it when writer B stores: without a lock A's write drops
    B's entry. A waits (up to a bound) for B to finish first; with the lock B cannot, so both entries survive."""
    a_writing, b_done = threading.Event(), threading.Event()
    atomic_target = cost.atomic_target

    @contextlib.contextmanager
    def slow_for_a(path):
        if threading.current_thread().name == "A":
            a_writing.set()
            b_done.wait(timeout=3)  # a bound, not a timing: B finishing first is the race being tested
        with atomic_target(path) as temp:
            yield temp

    monkeypatch.setattr(cost, "atomic_target", slow_for_a)
    other = replace(COSTS, key=replace(KEY, caption_tokens=64))
    a = threading.Thread(target=cost.store_calibration, args=(COSTS,), name="A")
    b = threading.Thread(target=lambda: (cost.store_calibration(other), b_done.set()), name="B")
    a.start()
    assert a_writing.wait(timeout=60)
    b.start()
    a.join(60)
    b.join(60)
    assert sorted(entry.key.caption_tokens for entry in cost.load_calibrations()) == [32, 64]


def test_the_cache_folder_follows_the_environment(cache_dir, monkeypatch, tmp_path):
    assert cost.calibration_file() == cache_dir / cost.CALIBRATION_FILE
    monkeypatch.delenv(cost.CALIBRATION_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cost.calibration_file() == tmp_path / "xdg" / "lumina_video" / cost.CALIBRATION_FILE


def test_guided_calls_in_the_prediction_follow_time_aware_cfg():
    config = SampleConfig.from_official({"P": "1x2", "step": 11, "ts": 0, "cfg": [4.0, [0.5, 0.0]]})
    guided = sum(1 for _, t, _, _ in config.model_calls() if value_at(config.cfg, t) > 0)
    assert guided == 5  # t = 0, 0.1, ..., 0.4
    assert predicted_seconds(config, COSTS) == pytest.approx(5 * 10.0 + 5 * 4.0)
