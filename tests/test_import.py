"""``robench import``: a model defined outside robench becomes a verified bundle that ``robench run`` attacks.

The model (tests/import_fixtures.py ``SmallNet``: a plain nn.Module with dropout and a named penultimate
layer) is briefly trained on the bundled mnist-5k data, exported with ``torch.export`` to a .pt2 file and
saved as safetensors weights for its factory ``import_fixtures:small_net``; both are imported through the
CLI. Bad imports each end in one line, and no code in a weights file or an archive ever runs.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import import_fixtures as F
from robench.attacks.base import AttackTarget, Bounds
from robench.attacks.objectives import objective_value
from robench.checkpoints.bundle import load_bundle
from robench.checkpoints.imported.archive import check_expression
from robench.checkpoints.imported.program import PROGRAM_KEY
from robench.checkpoints.imported.program_json import check_target
from robench.cli.commands import main
from robench.core.data import load_dataset
from robench.core.errors import BundleError, ConfigError
from robench.core.provenance import state_dict_hash
from robench.detectors import DETECTORS, fit_or_load
from robench.detectors.bu import dropout_layers, mc_dropout_uncertainty
from robench.specs.threat_files import select_threats
from test_cli import assert_one_line_error
from test_cli import run as run_cli

MNIST = ["--dataset", "mnist-5k"]
# Fields that size an attack's work, and the small value a plumbing test runs them at.
SMALL = {
    "steps": 2,
    "binary_search_steps": 1,
    "samples": 8,
    "n_iter": 2,
    "iterations": 2,
    "restarts": 1,
    "n_restarts": 1,
    "queries": 16,
    "n_queries": 16,
}


def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in-process (usable from module-scoped fixtures, which cannot take capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return int(info.value.code or 0), out.getvalue(), err.getvalue()


def penultimate_of(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The named feature layer's output on the eager model (a forward hook, as the importer captures it)."""
    box: list[torch.Tensor] = []
    handle = net.penultimate.register_forward_hook(lambda mod, args, out: box.append(out))
    with torch.no_grad():
        net.eval()(x)
    handle.remove()
    return box[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The trained source model, its .pt2 program and safetensors weights, and both imported bundles."""
    root = tmp_path_factory.mktemp("import")
    net = F.train_briefly(F.small_net(), steps=40)
    F.write_import_sources(root, net)
    for name, args in {
        "from-pt2": [root / "net.pt2"],
        "from-factory": ["import_fixtures:small_net", "--weights", root / "net.safetensors"],
    }.items():
        code, out, err = cli("import", *args, "--out", root / f"{name}.pt", "--feature-layer", "penultimate", *MNIST)
        assert code == 0, err
        assert "features from 'penultimate' (d=16)" in out and "MC dropout p=0.25" in out, out
    return {"root": root, "net": net}


def _shrunk_settings() -> list[str]:
    """--set LABEL.FIELD=small for every attack of every threat 'all' runs (whatever threats are registered)."""
    attacks = defaultdict(list)
    for threat in select_threats("all", substitute=False):
        for spec in threat.attacks:
            attacks[spec.label].append(spec.build("mnist").params())
    args = []
    for label, params in attacks.items():
        for field, small in SMALL.items():
            if all(
                isinstance(p.get(field), int) and not isinstance(p.get(field), bool) and p[field] > small
                for p in params
            ):
                args += ["--set", f"{label}.{field}={small}"]
    return args


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", ["from-pt2", "from-factory"])
def test_run_all_threats_on_imported_models(world, name):
    """``robench run --threat all`` on both imports: records for every threat, KD and BU on the named layer."""
    root = world["root"]
    out = root / f"run-{name}"
    code, stdout, err = cli(
        "run", "--model", root / f"{name}.pt", "--threat", "all", "--n", "8", "--batch-size", "8", "--device", "cpu",
        "--no-progress", "--no-sanity", "--out", out, "--detector", "kd", "--detector", "bu",
        "--detector-set", "bu.passes=4", *_shrunk_settings(),
    )  # fmt: skip
    assert code == 0, err
    records = pd.read_parquet(out / "records.parquet")
    expected = {t.name for t in select_threats("all", substitute=False)}
    assert set(records["threat"]) == expected
    assert {"score_adv:kd", "score_adv:bu"} <= set(records.columns)
    assert records["score_adv:kd"].notna().any() and records["score_adv:bu"].notna().any()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["detector"]) == {"kd", "bu"}
    assert summary["auc_roc"].notna().any()


def test_kd_fits_on_the_named_layer(world):
    """The KD detector's training points are the source model's penultimate outputs (16 wide), class by class."""
    net = world["net"]
    for name in ("from-pt2", "from-factory"):
        bundle = load_bundle(world["root"] / f"{name}.pt")
        assert bundle.meta.feature_layer == "penultimate" and bundle.meta.feature_dim == 16
        kd = DETECTORS.get("kd")()
        train = load_dataset("mnist-5k").train
        fit_or_load(kd, bundle, train, torch.device("cpu"), use_cache=False)
        points = kd.fitted_state()["class_3"]
        assert points.shape[1] == 16
        expected = penultimate_of(net, train.x[train.y == 3])
        assert torch.allclose(points, expected, atol=1e-5)


def test_noise_threat_runs_through_the_cli(world, capsys):
    root = world["root"]
    code, out, err = run_cli(
        capsys, "run", "--model", str(root / "from-pt2.pt"), "--threat", "noise", "--n", "8", "--batch-size", "8",
        "--device", "cpu", "--no-progress", "--no-sanity", "--out", str(root / "noise"), "--detector", "kd",
    )  # fmt: skip
    assert code == 0, err
    assert set(pd.read_parquet(root / "noise" / "records.parquet")["threat"]) == {"noise"}


# ---------------------------------------------------------------- what the bundles compute


def test_imported_models_compute_the_source_model(world):
    net = world["net"]
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = net.eval()(x)
    for name in ("from-pt2", "from-factory"):
        bundle = load_bundle(world["root"] / f"{name}.pt")
        assert bundle.meta.arch == "imported" and bundle.meta.arch_kwargs["head"] == "separate"
        with torch.no_grad():
            assert torch.allclose(bundle.model(x), reference, atol=1e-5)
            assert torch.allclose(bundle.model.features(x), penultimate_of(net, x), atol=1e-5)
        # the head is robench's linear head with the model's last layer's weights: the adaptive objective applies
        assert torch.equal(bundle.model.head.weight, net.classifier.weight)
        assert bundle.meta.clean_accuracy is not None and bundle.meta.clean_accuracy > 0.2


def test_both_sources_give_the_same_hash_and_info_shows_the_source(world, capsys):
    root = world["root"]
    pt2, factory = load_bundle(root / "from-pt2.pt"), load_bundle(root / "from-factory.pt")
    assert pt2.meta.arch_kwargs["source"] == "export" and factory.meta.arch_kwargs["source"] == "factory"
    code, out, _ = run_cli(capsys, "info", str(root / "from-factory.pt"))
    assert code == 0 and "source=factory" in out and "imported" in out
    assert pt2.meta.train_config["imported"]["source"] == "net.pt2"
    assert factory.meta.train_config["imported"]["weights"] == "net.safetensors"


def test_gradients_reach_the_input_and_batches_of_any_size_run(world):
    bundle = load_bundle(world["root"] / "from-pt2.pt")
    for n in (1, 3, 0):
        x = torch.rand(n, 1, 28, 28, requires_grad=True)
        logits = bundle.model(x)
        assert logits.shape == (n, 10)
        if n:
            (grad,) = torch.autograd.grad(logits.sum(), x)
            assert grad.abs().sum() > 0


def test_mc_dropout_matches_the_eager_model(world):
    """BU drives the program's dropout: seeded, reproducible, and the same draws as the eager model's nn.Dropout."""
    bundle = load_bundle(world["root"] / "from-factory.pt")
    assert [type(m).__name__ for m in dropout_layers(bundle.model)] == ["MCDropoutSwitch"]
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = mc_dropout_uncertainty(bundle.model, x, 6, seed=0)
        again = mc_dropout_uncertainty(bundle.model, x, 6, seed=0)
        other = mc_dropout_uncertainty(bundle.model, x, 6, seed=1)
        eager = mc_dropout_uncertainty(world["net"], x, 6, seed=0)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert bool((first > 0).all())
    assert torch.allclose(first, eager, atol=1e-6)
    assert not bundle.model.backbone.mc_dropout.training  # left in eval mode


def test_a_model_without_dropout_has_no_bu(tmp_path, capsys):
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 12), torch.nn.ReLU(), torch.nn.Linear(12, 10)
    ).eval()
    F.export_program(net, tmp_path / "plain.pt2")
    code, out, err = run_cli(
        capsys,
        "import",
        str(tmp_path / "plain.pt2"),
        "--out",
        str(tmp_path / "plain.pt"),
        "--feature-layer",
        "2",
        *MNIST,
    )
    assert code == 0, err
    assert "BU: not applicable" in out
    bundle = load_bundle(tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="dropout"):
        DETECTORS.get("bu")().check_applicable(bundle.model, bundle.defense)


def test_a_feature_layer_away_from_the_head_gives_a_joint_program(world, tmp_path, capsys):
    """Features from 'hidden' (not the last layer's input): one pass gives z and the logits; ce and adaptive agree."""
    out = tmp_path / "joint.pt"
    code, stdout, err = run_cli(
        capsys, "import", str(world["root"] / "net.pt2"), "--out", str(out), "--feature-layer", "hidden", *MNIST
    )
    assert code == 0, err
    assert "none separable" in stdout
    bundle = load_bundle(out)
    assert bundle.meta.arch_kwargs["head"] == "joint" and bundle.meta.feature_dim == 32
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), world["net"].eval()(x), atol=1e-5)
    target = AttackTarget(bundle.model, bundle.defense, Bounds(0.0, 1.0))
    forward = target.forward(x.requires_grad_(True))
    ce = objective_value("ce", target, forward, y, None)
    adaptive = objective_value("adaptive", target, forward, y, None)
    assert torch.allclose(ce, adaptive)
    (grad,) = torch.autograd.grad(adaptive.sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="no separable head"):
        bundle.model.head(forward.z.detach().clone())


def test_a_robench_head_in_a_foreign_model_keeps_its_defense(tmp_path, capsys):
    """A user's net ending in robench's GMHead, imported with --defense gm: the GM head, its likelihood detector."""
    from robench.defenses.gm import GMHead

    class WithGMHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8))
            self.head = GMHead(8, 10)

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    F.export_program(WithGMHead(), tmp_path / "gm.pt2")
    code, out, err = run_cli(
        capsys,
        "import",
        str(tmp_path / "gm.pt2"),
        "--out",
        str(tmp_path / "gm.pt"),
        "--feature-layer",
        "body",
        "--defense",
        "gm",
        *MNIST,
    )
    assert code == 0, err
    bundle = load_bundle(tmp_path / "gm.pt")
    assert isinstance(bundle.model.head, GMHead) and bundle.defense.name == "gm"
    DETECTORS.get("gm-likelihood")().check_applicable(bundle.model, bundle.defense)
    code, _, err = run_cli(
        capsys,
        "import",
        str(tmp_path / "gm.pt2"),
        "--out",
        str(tmp_path / "mmc.pt"),
        "--feature-layer",
        "body",
        "--defense",
        "rce",
        *MNIST,
    )
    assert_one_line_error(code, err, "--defense rce")


# ---------------------------------------------------------------- bad imports: one line each, nothing runs


@pytest.fixture(scope="module")
def bad(world):
    root = world["root"]
    F.write_bad_imports(root, root / "MARKER")
    return root


BAD_IDS = list(F.bad_imports(Path("/")))


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_import_is_one_line(bad, capsys, case):
    args, fragments = F.bad_imports(bad)[case]
    out = bad / f"{case}.pt"
    code, stdout, err = run_cli(capsys, "import", *map(str, args), "--out", str(out))
    assert_one_line_error(code, err, *fragments)
    assert "internal error" not in err
    assert not out.exists()
    assert not (bad / "MARKER").exists() and not Path("MARKER").exists(), "a code payload ran"


def test_import_refuses_to_overwrite(bad, capsys):
    code, _, err = run_cli(
        capsys,
        "import",
        str(bad / "net.pt2"),
        "--out",
        str(bad / "from-pt2.pt"),
        "--feature-layer",
        "penultimate",
        *MNIST,
    )
    assert_one_line_error(code, err, "exists", "--force")


def test_a_tampered_program_in_a_bundle_is_refused_before_it_loads(world, tmp_path):
    """A bundle whose program is swapped for an archive with a pickle payload (hash recomputed): refused, nothing
    runs."""
    marker = tmp_path / "MARKER"
    F.pt2_with_payload(world["root"] / "net.pt2", tmp_path / "evil.pt2", marker)
    payload = torch.load(world["root"] / "from-pt2.pt", weights_only=True)
    from robench.checkpoints.bundle import BundleMeta

    meta = BundleMeta.from_json(payload["meta"], "test")
    evil = (tmp_path / "evil.pt2").read_bytes()
    payload["state_dict"][PROGRAM_KEY] = torch.frombuffer(bytearray(evil), dtype=torch.uint8).clone()
    payload["content_hash"] = state_dict_hash(payload["state_dict"], meta.identity())
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "tampered.pt")
    assert "refused" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    # an edited byte without a recomputed hash is caught by the hash
    payload = torch.load(world["root"] / "from-pt2.pt", weights_only=True)
    payload["state_dict"][PROGRAM_KEY][100] ^= 1
    torch.save(payload, tmp_path / "flipped.pt")
    with pytest.raises(BundleError, match="content hash"):
        load_bundle(tmp_path / "flipped.pt")


@pytest.mark.parametrize(
    "variant",
    ["second-program.JSON", "guards-code", "expr-tower-of-powers", "extra-models/evil.pt", "pickle-in-weight"],
)
def test_a_crafted_program_in_a_bundle_never_runs_code(world, tmp_path, capsys, variant):
    """The archive attacks of tests/test_archive_attacks.py inside a bundle (hash recomputed): load, info and run."""
    import zipfile

    import test_archive_attacks as T
    from robench.checkpoints.bundle import BundleMeta

    marker = tmp_path / "MARKER"
    payload = torch.load(world["root"] / "from-pt2.pt", weights_only=True)
    program = payload["state_dict"][PROGRAM_KEY].numpy().tobytes()
    with zipfile.ZipFile(io.BytesIO(program)) as archive:
        infos = archive.infolist()
        members = {info.filename: archive.read(info) for info in infos}
    built = {**T.REFUSED, **T.DROPPED}[variant](infos[0].filename.split("/")[0], members, marker)
    evil = T._zip(built, marker)
    payload["state_dict"][PROGRAM_KEY] = torch.frombuffer(bytearray(evil), dtype=torch.uint8).clone()
    meta = BundleMeta.from_json(payload["meta"], "test")
    payload["content_hash"] = state_dict_hash(payload["state_dict"], meta.identity())
    torch.save(payload, tmp_path / "crafted.pt")
    if variant in T.DROPPED:  # robench drops it: the bundle loads and runs, the payload never does
        bundle = load_bundle(tmp_path / "crafted.pt")
        with torch.no_grad():
            bundle.model(torch.rand(2, 1, 28, 28))
    else:
        with pytest.raises(BundleError, match="refused"):
            load_bundle(tmp_path / "crafted.pt")
        for command in (["info", str(tmp_path / "crafted.pt")],
                        ["run", "--model", str(tmp_path / "crafted.pt"), "--threat", "noise", "--n", "2",
                         "--out", str(tmp_path / "out")]):  # fmt: skip
            code, _, err = run_cli(capsys, *command)
            assert_one_line_error(code, err, "refused")
    assert not marker.exists(), "a code payload ran"


def test_archive_checks():
    assert check_expression("Symbol('s31', positive=True, integer=True)")
    assert check_expression("2*s0 + Max(2, s1) - FloorDiv(s0, 2)")
    for evil in ("__import__('os').system('x')", "s0.__class__", "exec('1')", "open('f')", "[s0]", "lambda: 1"):
        assert not check_expression(evil), evil
    assert check_target("torch.ops.aten.conv2d.default") is None
    assert check_target("_operator.getitem") is None
    assert check_target("torch.sym_max") is None
    for evil in (
        "torch.serialization.os.system",
        "builtins.eval",
        "torch.ops.torchvision.nms.default",
        "_operator.attrgetter",
        "torch.ops.higher_order.call_torchbind",
    ):
        assert check_target(evil) is not None, evil


def test_timm_architecture_with_local_weights(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)
    save_file(model.state_dict(), tmp_path / "timm.safetensors")
    code, out, err = run_cli(
        capsys, "import", "timm:test_resnet", "--factory-kwarg", "num_classes=10", "--factory-kwarg", "in_chans=1",
        "--weights", str(tmp_path / "timm.safetensors"), "--feature-layer", "global_pool",
        "--out", str(tmp_path / "timm.pt"), *MNIST,
    )  # fmt: skip
    assert code == 0, err
    bundle = load_bundle(tmp_path / "timm.pt")
    assert bundle.meta.arch_kwargs["source"] == "timm" and bundle.meta.arch_kwargs["head"] == "separate"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), model.eval()(x), atol=1e-4)
    assert math.isclose(bundle.meta.feature_dim, model.num_features)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive(world, tmp_path, capsys):
    """A TorchScript archive: converted to an exported program; its weighted modules can be named as feature layers."""
    net = world["net"].eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "net.ts")
    code, out, err = run_cli(
        capsys,
        "import",
        str(tmp_path / "net.ts"),
        "--out",
        str(tmp_path / "ts.pt"),
        "--feature-layer",
        "penultimate",
        *MNIST,
    )
    assert code == 0, err
    assert err.strip() == ""  # torch's converter logs nothing through
    bundle = load_bundle(tmp_path / "ts.pt")
    assert bundle.meta.arch_kwargs == {
        "source": "torchscript",
        "head": "separate",
        "head_bias": True,
        "mc_dropout": 0.25,
    }
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), net(x), atol=1e-5)
        assert torch.allclose(bundle.model.features(x), penultimate_of(net, x), atol=1e-5)
    # a module without weights has no boundary left in a TorchScript program
    code, _, err = run_cli(
        capsys, "import", str(tmp_path / "net.ts"), "--out", str(tmp_path / "ts2.pt"), "--feature-layer", "drop", *MNIST
    )
    assert_one_line_error(code, err, "no module 'drop'")


@pytest.mark.gpu
def test_imported_model_on_cuda(world):
    """Weights, the program's own constants and the BU switch all move to the device."""
    bundle = load_bundle(world["root"] / "from-factory.pt", device="cuda")
    x = torch.rand(4, 1, 28, 28, device="cuda")
    with torch.no_grad():
        logits = bundle.model(x)
        expected = world["net"].eval()(x.cpu())
        u = mc_dropout_uncertainty(bundle.model, x, 4, seed=0)
    assert logits.device.type == "cuda" and torch.allclose(logits.cpu(), expected, atol=1e-4)
    assert u.device.type == "cuda" and bool((u > 0).all())


class WithConstants(torch.nn.Module):
    """A model whose program keeps tensors of its own: a non-persistent buffer and a constant made in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 6))
        self.out = torch.nn.Linear(6, 10)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x):
        return self.out(self.flat(x) * self.scale + torch.tensor([0.5]))


def test_conversions_reach_the_programs_own_tensors(tmp_path, capsys):
    """dtype (like device) moves convert the constants the program keeps, not only robench's weights."""
    torch.manual_seed(0)
    net = WithConstants().eval()
    F.export_program(net, tmp_path / "c.pt2")
    code, _, err = run_cli(
        capsys, "import", str(tmp_path / "c.pt2"), "--out", str(tmp_path / "c.pt"), "--feature-layer", "flat", *MNIST
    )
    assert code == 0, err
    model = load_bundle(tmp_path / "c.pt").model.double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        assert model(x).dtype == torch.float64
        assert torch.allclose(model(x), net.double()(x), atol=1e-10)
