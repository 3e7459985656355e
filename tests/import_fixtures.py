"""Models defined outside robench, for ``robench import`` tests (tests/ is on the pythonpath, so factories resolve).

``SmallNet`` is a plain ``nn.Module`` for 1 x 28 x 28 inputs with a dropout layer and a named penultimate
layer: ``penultimate`` (a Linear to 16 features) feeds ``classifier`` (a Linear to the 10 logits). The
factories and the variants below are the good and bad models the import tests and the bad-input corpus use.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

FEATURES = 16


class SmallNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.25)
        self.hidden = nn.Linear(width * 16, 32)
        self.penultimate = nn.Linear(32, FEATURES)
        self.classifier = nn.Linear(FEATURES, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.flatten(self.pool(torch.relu(self.conv(x)))))
        return self.classifier(self.penultimate(torch.relu(self.hidden(h))))


def small_net(width: int = 8) -> SmallNet:
    """The factory ``import_fixtures:small_net``; weights are drawn from a fixed seed (without touching the global
    RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SmallNet(width)


class Softmaxed(SmallNet):
    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(super().forward(x), dim=1)


class TupleOut(SmallNet):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = super().forward(x)
        return logits, logits


class DictOut(SmallNet):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": super().forward(x)}


def softmaxed() -> Softmaxed:
    return Softmaxed()


def tuple_out() -> TupleOut:
    return TupleOut()


def dict_out() -> DictOut:
    return DictOut()


def not_a_module() -> str:
    return "a string"


def raises() -> nn.Module:
    raise RuntimeError("the factory itself failed")


NOT_CALLABLE = 3


def train_briefly(model: nn.Module, steps: int = 60, seed: int = 0) -> nn.Module:
    """A few Adam steps on the bundled mnist-5k training split (enough for clean-correct samples), then eval mode."""
    from robench.core.data import load_dataset

    data = load_dataset("mnist-5k")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            rows = torch.randint(0, len(data.train), (128,), generator=generator)
            loss = nn.functional.cross_entropy(model(data.train.x[rows]), data.train.y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def export_program(model: nn.Module, path: Path, batch: int = 4, dynamic: bool = True) -> Path:
    """``torch.export`` of ``model`` (eval mode) with a dynamic batch dimension (or a fixed one), saved to ``path``."""
    model.eval()
    example = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ep = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None)
    torch.export.save(ep, path)
    return path


class Payload:
    """Unpickling this runs ``os.system`` (writes ``marker``): a code payload that must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.marker}",))


def pickle_payload_weights(path: Path, marker: Path) -> Path:
    """A ``.pt`` "state dict" whose pickle calls os.system when loaded without weights_only."""
    state = {"conv.weight": torch.zeros(1), "evil": Payload(marker)}
    torch.save(state, path)
    return path


def pt2_with_payload(source: Path, out: Path, marker: Path, member: str = "data/sample_inputs/model.pt") -> Path:
    """A copy of the ``.pt2`` archive ``source`` whose ``member`` is replaced by a pickle that runs os.system."""
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)  # torch.save's own format around a pickle that calls os.system
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith(member):
                data = buffer.getvalue()
            copy.writestr(info, data)
    return out


def pt2_with_edited_graph(source: Path, out: Path, old: str, new: str) -> Path:
    """A copy of ``source`` with ``old`` replaced by ``new`` in its program's JSON (models/model.json)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith("models/model.json"):
                text = data.decode()
                assert old in text, old
                data = text.replace(old, new).encode()
            copy.writestr(info, data)
    return out


def pt2_with_member(source: Path, out: Path, member: str, data: bytes) -> Path:
    """A copy of ``source`` with one more member ``member`` (below the archive's top folder) holding ``data``."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        top = archive.infolist()[0].filename.split("/")[0]
        for info in archive.infolist():
            copy.writestr(info, archive.read(info.filename))
        copy.writestr(f"{top}/{member}", data)
    return out


def write_import_sources(root: Path, net: nn.Module) -> None:
    """``root``/net.pt2 (the exported program of ``net``) and ``root``/net.safetensors (its weights)."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), root / "net.safetensors")
    export_program(net, root / "net.pt2")


def write_bad_imports(root: Path, marker: Path) -> None:
    """The bad inputs of :func:`bad_imports` next to ``root``/net.pt2; a payload that runs would create ``marker``."""
    from safetensors.torch import save_file

    state = small_net().state_dict()
    save_file({k: v for k, v in state.items() if k != "classifier.bias"}, root / "missing.safetensors")
    save_file({**state, "extra.weight": torch.zeros(2)}, root / "unexpected.safetensors")
    save_file({**state, "classifier.weight": torch.zeros(10, 17)}, root / "misshaped.safetensors")
    torch.save(state, root / "plain-state.pt")
    pickle_payload_weights(root / "payload.pt", marker)
    pt2_with_payload(root / "net.pt2", root / "payload.pt2", marker)
    pt2_with_edited_graph(
        root / "net.pt2", root / "os-target.pt2", "torch.ops.aten.relu.default", "torch.serialization.os.system"
    )
    pt2_with_edited_graph(
        root / "net.pt2", root / "sympy-eval.pt2", "Symbol(", f"__import__('os').system('touch {marker}') + Symbol("
    )
    (root / "garbage.pt2").write_bytes(b"not a zip at all")
    with zipfile.ZipFile(root / "net.pt2") as archive:
        program = next(archive.read(n) for n in archive.namelist() if n.endswith("models/model.json"))
    pt2_with_member(root / "net.pt2", root / "second-program.pt2", "models/evil.JSON", program)
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    pt2_with_member(root / "net.pt2", root / "extra-member.pt2", "data/weights/evil.pt", buffer.getvalue())
    pt2_with_edited_graph(root / "net.pt2", root / "tower.pt2", "Symbol(", "2**2**2**2**2**2**2**2**2 + Symbol(")
    export_program(small_net(), root / "static-batch.pt2", batch=2, dynamic=False)


def bad_imports(root: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    """Case -> (arguments of ``robench import`` after the command, fragments its one-line error must hold).

    Every case is refused before anything is exported or written (``robench.checkpoints.imported.importer._export``).
    """
    pt2, fac, mnist = [root / "net.pt2"], ["import_fixtures:small_net"], ["--dataset", "mnist-5k"]

    def w(name: str) -> list:
        return ["--weights", root / name]

    layer = ["--feature-layer", "penultimate"]
    return {
        "layer-misspelled": (
            pt2 + ["--feature-layer", "penultimat"] + mnist,
            ("no module 'penultimat'", "did you mean", "'penultimate'"),
        ),
        "layer-4d-output": (pt2 + ["--feature-layer", "conv"] + mnist, ("(N x d)",)),
        "input-shape-mismatch": (
            fac + layer + ["--input-shape", "3,32,32", "--num-classes", "10"],
            ("shape (3, 32, 32)",),
        ),
        "classes-mismatch": (
            fac + layer + ["--input-shape", "1,28,28", "--num-classes", "7"],
            ("10 outputs", "7 classes"),
        ),
        "input-shape-malformed": (fac + layer + ["--input-shape", "1,28", "--num-classes", "10"], ("--input-shape",)),
        "no-inputs-declared": (pt2 + layer, ("--dataset", "--input-shape")),
        "value-range-reversed": (pt2 + layer + mnist + ["--value-range", "1,0"], ("--value-range",)),
        "mean-without-std": (pt2 + layer + mnist + ["--mean", "0.5"], ("--mean", "--std")),
        "std-zero": (pt2 + layer + mnist + ["--mean", "0.5", "--std", "0"], ("--std",)),
        "probabilities": (["import_fixtures:softmaxed"] + layer + mnist, ("return logits, not softmax",)),
        "tuple-output": (["import_fixtures:tuple_out"] + layer + mnist, ("tuple", "wrap your model")),
        "dict-output": (["import_fixtures:dict_out"] + layer + mnist, ("dict", "wrap your model")),
        "weights-missing": (fac + w("missing.safetensors") + layer + mnist, ("missing classifier.bias",)),
        "weights-unexpected": (fac + w("unexpected.safetensors") + layer + mnist, ("unexpected extra.weight",)),
        "weights-misshaped": (
            fac + w("misshaped.safetensors") + layer + mnist,
            ("classifier.weight has shape [10, 17]",),
        ),
        "weights-pickle-payload": (fac + w("payload.pt") + layer + mnist, ("refused", "system")),
        "weights-no-file": (fac + w("nope.safetensors") + layer + mnist, ("no such file",)),
        "weights-with-a-program": (pt2 + w("net.safetensors") + layer + mnist, ("carries its weights",)),
        "pt2-pickle-payload": (
            [root / "payload.pt2"] + layer + mnist,
            ("refused", "data/sample_inputs/model.pt", "system"),
        ),
        "pt2-os-system-target": (
            [root / "os-target.pt2"] + layer + mnist,
            ("refused", "torch.serialization.os.system"),
        ),
        "pt2-sympy-eval": ([root / "sympy-eval.pt2"] + layer + mnist, ("refused", "outside robench's shape grammar")),
        "pt2-second-program": ([root / "second-program.pt2"] + layer + mnist, ("refused", "models/evil.JSON")),
        "pt2-extra-member": ([root / "extra-member.pt2"] + layer + mnist, ("refused", "data/weights/evil.pt")),
        "pt2-tower-of-powers": ([root / "tower.pt2"] + layer + mnist, ("refused", "shape grammar")),
        "pt2-garbage": ([root / "garbage.pt2"] + layer + mnist, ("not a torch.export program",)),
        "pt2-static-batch": ([root / "static-batch.pt2"] + layer + mnist, ("batches of exactly 2", "Dim('batch')")),
        "state-dict-as-source": ([root / "plain-state.pt"] + layer + mnist, ("--kind factory",)),
        "no-such-source": ([root / "nothing-here.pt2"] + layer + mnist, ("no such file",)),
        "factory-no-module": (
            ["no_such_module_xyz:make"] + layer + mnist,
            ("cannot import module 'no_such_module_xyz'",),
        ),
        "factory-no-function": (
            ["import_fixtures:small_nett"] + layer + mnist,
            ("has no 'small_nett'", "did you mean"),
        ),
        "factory-not-callable": (["import_fixtures:NOT_CALLABLE"] + layer + mnist, ("not a callable",)),
        "factory-not-a-module": (["import_fixtures:not_a_module"] + layer + mnist, ("not a torch.nn.Module",)),
        "factory-raises": (["import_fixtures:raises"] + layer + mnist, ("the factory itself failed",)),
        "factory-bad-kwarg": (fac + ["--factory-kwarg", "depth=3"] + layer + mnist, ("depth",)),
        "defense-without-its-head": (pt2 + layer + mnist + ["--defense", "gm"], ("--defense gm",)),
        "defense-unknown": (pt2 + layer + mnist + ["--defense", "gmm"], ("gmm", "did you mean")),
        "dataset-unknown": (pt2 + layer + ["--dataset", "mnist-5kk"], ("mnist-5kk", "did you mean")),
        "timm-pretrained": (
            ["timm:resnet18", "--factory-kwarg", "pretrained=true"]
            + w("net.safetensors")
            + ["--feature-layer", "fc"]
            + mnist,
            ("pretrained", "never downloads"),
        ),
        "timm-hub-name": (
            ["timm:hf-hub:timm/resnet18"] + w("net.safetensors") + ["--feature-layer", "fc"] + mnist,
            ("hub",),
        ),
        "timm-without-weights": (["timm:resnet18", "--feature-layer", "fc"] + mnist, ("--weights",)),
    }
