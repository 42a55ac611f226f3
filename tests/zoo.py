"""A zoo of small FOREIGN architectures (none of them is in sample_models), each a zero-argument function returning a
``compression_core.Workload``, so each is also a workload reference: ``tests/zoo.py:resnet``.

Each model is trained at first use in a second or two (one thread, fixed seed, deterministic) on data that ships in
installed packages (scikit-learn's digits) or on seeded synthetic token sequences; the result is cached per process
(techniques never modify their input, so one workload is shared).

    resnet          residual adds with BatchNorm, a strided 1x1 projection shortcut              digits, accuracy
    mobilenet       depthwise (groups=C) and grouped (groups=4) convs, ReLU6                     digits, accuracy
    flatten_cnn     a conv flattened into a Linear (no global pooling)                           digits, accuracy
    densenet        concatenation skips (torch.cat of every earlier feature map)                 digits, accuracy
    same_pad_cnn    a Conv2d subclass whose own forward pads ("same", stride 2, EfficientNet-Lite) digits, accuracy
    se_cnn          MBConv: expand, depthwise, squeeze-excite (a gate that multiplies), residual  digits, accuracy
    scaled_mlp      a block that owns a Parameter (a per-feature scale) AND has child Linears   digits, accuracy
    row_transformer nn.TransformerEncoderLayer inside an nn.Sequential; an embedding module with
                    its own position Parameter and a child Linear (digits rows as 8 tokens)       digits, accuracy
    gru             nn.GRU over digit rows, last hidden state into a Linear                      digits, a callable metric
    token_transformer  nn.Embedding fed integer token ids (vocab 5000) + nn.TransformerEncoder    synthetic, accuracy
    dict_attention  input_ids + attention_mask as keyword arguments (a dict of tensors),
                    nn.MultiheadAttention with a key padding mask                                synthetic, agreement
    gpt2            Hugging Face GPT2LMHeadModel (2 layers, 128 wide, 4 heads): transformers' Conv1D
                    layers (weight (in, out)) and lm_head tied to the token embedding; random
                    weights, logits (B, T, vocab) for every position                              synthetic, agreement
    tied            an nn.Embedding whose weight IS the output Linear's (weight tying), token ids  synthetic, accuracy

The architectures are also the ONE copy of the small CNNs the tests and benchmarks use elsewhere (parametrised by
input channels, widths and classes; the defaults are the zoo's): ``ResNet``/``BasicBlock``, ``DepthwiseCNN``,
``FlattenCNN``, ``DenseNet``, ``SECNN``/``SqueezeExcite``; ``randomize_bn`` gives an untrained model per-channel
BatchNorm statistics as after training (tests/test_graph.py, benchmarks/pruning.py, benchmarks/quantization.py).
This file imports only torch, sklearn, compression_core and the standard library (and transformers inside ``gpt2``):
it is loaded by file path.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compression_core import Metric, Workload

ZOO: dict[str, callable] = {}  # name -> zero-argument function returning the Workload


def _zoo(fn):
    """Register ``fn`` in ZOO and build its workload once per process."""
    cached = functools.lru_cache(maxsize=None)(fn)
    functools.update_wrapper(cached, fn)
    ZOO[fn.__name__] = cached
    return cached


# ------------------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """sklearn digits (1797 x 8x8 in [0, 1]) as (train 1257, calib 180, test 360) splits of (B, 1, 8, 8), seed 0."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[540:], y[540:]), (x[360:540], y[360:540]), (x[:360], y[:360])


VOCAB, SEQ, TOPICS = 5000, 16, 4


@functools.lru_cache(maxsize=None)
def tokens(n: int = 2400, padded: bool = False) -> tuple:
    """Synthetic topic classification over token ids in [1, VOCAB) (0 is padding): each token id belongs to one of
    TOPICS topics (a fixed random assignment); a sequence draws 3/4 of its tokens from its topic and the rest at random,
    so the label is recoverable only by reading the ids exactly. ``padded``: random lengths 6..SEQ with padding
    id 0 and an attention mask. Splits: train, calib, test = 1600, 200, 600."""
    g = torch.Generator().manual_seed(1)
    topic_of = torch.randint(0, TOPICS, (VOCAB,), generator=g)
    topic_of[0] = -1
    by_topic = [torch.nonzero(topic_of == t).flatten() for t in range(TOPICS)]
    y = torch.randint(0, TOPICS, (n,), generator=g)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)  # (N, SEQ) int64
    for i in range(n):
        pool = by_topic[int(y[i])]
        pos = torch.randperm(SEQ, generator=g)[: 3 * SEQ // 4]
        ids[i, pos] = pool[torch.randint(0, len(pool), (len(pos),), generator=g)]
    mask = torch.ones(n, SEQ, dtype=torch.long)
    if padded:
        lengths = torch.randint(SEQ // 2 + 2, SEQ + 1, (n,), generator=g)
        mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()  # (N, SEQ) 1 = token, 0 = padding
        # keep the topic readable in the unpadded part: re-draw the topic's tokens inside it
        for i in range(n):
            pool = by_topic[int(y[i])]
            k = int(lengths[i])
            pos = torch.randperm(k, generator=g)[: 3 * k // 4]
            ids[i, pos] = pool[torch.randint(0, len(pool), (len(pos),), generator=g)]
        ids = ids * mask
    parts = []
    for a, b in ((0, 1600), (1600, 1800), (1800, n)):
        x = {"input_ids": ids[a:b], "attention_mask": mask[a:b]} if padded else ids[a:b]
        parts.append((x, y[a:b]))
    return tuple(parts)


# --------------------------------------------------------------------------------------------------- training
def _call(model: nn.Module, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _take(x, idx):
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def _cache_dir() -> Path:
    """Where trained zoo weights are kept between processes of a run (and between runs): the test workers and the
    CLI subprocesses then train each model once. ``COMPRESSION_LAB_TEST_CACHE`` overrides the folder."""
    return Path(os.environ.get("COMPRESSION_LAB_TEST_CACHE") or Path(tempfile.gettempdir()) / "compression-lab-test-cache")


def _cache_key(model: nn.Module, data: tuple, epochs: int, lr: float, batch: int, seed: int) -> str:
    """Everything the trained weights depend on: this file's source, the torch version, the architecture and its
    initial weights, the data and the training settings."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(f"{torch.__version__}|{type(model).__qualname__}|{epochs}|{lr}|{batch}|{seed}".encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    x, y = data
    for t in (list(x.values()) if isinstance(x, dict) else [x]) + [y]:
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def train(model: nn.Module, data: tuple, epochs: int, lr: float = 3e-3, batch: int = 64, seed: int = 0) -> nn.Module:
    """Adam on cross-entropy, one thread, seeded: the same weights in every process. Returns the model in eval mode.

    The result is cached on disk by everything it depends on (``_cache_key``), so a run trains each model once."""
    path = _cache_dir() / f"{_cache_key(model, data, epochs, lr, batch, seed)}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except Exception:  # a damaged cache file: train again and overwrite it
            pass
    _train(model, data, epochs, lr, batch, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: another worker never reads a half-written file
    return model.eval()


def _train(model: nn.Module, data: tuple, epochs: int, lr: float, batch: int, seed: int) -> nn.Module:
    x, y = data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            n = len(y)
            for _ in range(epochs):
                perm = torch.randperm(n)
                for i in range(0, n, batch):
                    idx = perm[i:i + batch]
                    loss = F.cross_entropy(_call(model, _take(x, idx)), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Per-channel BatchNorm2d statistics and scales that differ (as after training) on an untrained model, so that
    BatchNorm-aware importance and folding see distinct channels; seeded, the global RNG untouched. Returns the model
    in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _seeded(build, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _digits_workload(name: str, build, epochs: int, description: str, lr: float = 3e-3, **kw) -> Workload:
    tr, cal, te = digits()
    model = train(_seeded(build), tr, epochs, lr=lr)
    return Workload(name=name, model=model, train=tr, calib=cal, test=te, description=description, build=build,
                    lr=1e-3, **kw)


# ------------------------------------------------------------------------------------------------- residual
class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the input (or a strided 1x1 conv-BN projection of it)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))  # (B, cout, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # residual add


class ResNet(nn.Module):
    """A conv-BN-ReLU stem (stride ``stem_stride``), BasicBlock(c, c), BasicBlock(c, 2c, stride 2) and, with
    ``deep``, BasicBlock(2c, 2c); global average pooling into a Linear. The zoo's: ``ResNet()`` on 1x8x8 digits."""

    def __init__(self, c: int = 12, classes: int = 10, *, cin: int = 1, stem_stride: int = 1, deep: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, c, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.layer1 = BasicBlock(c, c)  # (B, c, 8, 8)
        self.layer2 = BasicBlock(c, 2 * c, stride=2)  # (B, 2c, 4, 4)
        self.layer3 = BasicBlock(2 * c, 2 * c) if deep else None
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        if self.layer3 is not None:
            x = self.layer3(x)
        return self.fc(x.mean((2, 3)))  # global average pool -> (B, 2c)


@_zoo
def resnet() -> Workload:
    return _digits_workload("zoo-resnet", ResNet, 5, "ResNet-style CNN: residual adds with BN, projection shortcut")


# ------------------------------------------------------------------------------------------------ depthwise
def _conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU6):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class MobileNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, 16),  # (B, 16, 8, 8)
            _conv_bn(16, 16, groups=16),  # depthwise
            _conv_bn(16, 32, k=1),  # pointwise
            _conv_bn(32, 32, stride=2, groups=4),  # grouped, (B, 32, 4, 4)
            _conv_bn(32, 32, groups=32),  # depthwise
            _conv_bn(32, 48, k=1),
        )
        self.classifier = nn.Linear(48, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


@_zoo
def mobilenet() -> Workload:
    return _digits_workload("zoo-mobilenet", MobileNet, 6, "MobileNet-style CNN: depthwise and grouped convs")


class DepthwiseCNN(nn.Module):
    """MobileNet-v1 style (not in ZOO): a conv-BN-ReLU6 stem (``c`` channels, stride ``stem_stride``), then
    depthwise-separable blocks (depthwise 3x3 with groups = channels, BN, ReLU6, pointwise 1x1, BN, ReLU6), one per
    (out channels, stride) in ``blocks``; global average pooling into a Linear."""

    def __init__(self, classes: int = 10, *, cin: int = 1, c: int = 16,
                 blocks: tuple[tuple[int, int], ...] = ((32, 1), (64, 2)), stem_stride: int = 1):
        super().__init__()
        self.stem = _conv_bn(cin, c, stride=stem_stride)
        layers = []
        for cout, stride in blocks:
            layers.append(nn.Sequential(*_conv_bn(c, c, stride=stride, groups=c), *_conv_bn(c, cout, k=1)))
            c = cout
        self.blocks = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


# -------------------------------------------------------------------------------------------------- flatten
class FlattenCNN(nn.Module):
    """conv1-ReLU-maxpool-conv2-ReLU (and a second maxpool with ``pool_last``) flattened into fc1-ReLU-fc2, for
    ``side`` x ``side`` inputs; the zoo's: ``FlattenCNN()`` on 1x8x8 digits."""

    def __init__(self, classes: int = 10, *, cin: int = 1, widths: tuple[int, int] = (8, 16), hidden: int = 32,
                 side: int = 8, pool_last: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, widths[0], 3, padding=1)  # (B, 8, 8, 8)
        self.pool = nn.MaxPool2d(2)  # (B, 8, 4, 4)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)  # (B, 16, 4, 4)
        self.pool_last = pool_last
        side = side // (4 if pool_last else 2)
        self.fc1 = nn.Linear(widths[1] * side * side, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(self.conv2(self.pool(F.relu(self.conv1(x)))))
        if self.pool_last:
            x = self.pool(x)
        x = torch.flatten(x, 1)  # (B, 256): each conv2 channel becomes 16 columns of fc1
        return self.fc2(F.relu(self.fc1(x)))


@_zoo
def flatten_cnn() -> Workload:
    return _digits_workload("zoo-flatten-cnn", FlattenCNN, 15, "CNN whose conv output is flattened into a Linear")


# ---------------------------------------------------------------------------------------------------- dense
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)  # (B, cin + growth, H, W)


class DenseNet(nn.Module):
    """A stem conv (``c`` channels), ``layers`` DenseLayers each concatenating ``growth`` channels, a BN-ReLU-1x1
    conv-avgpool transition to ``out`` channels, BN-ReLU, global average pooling into a Linear; the zoo's:
    ``DenseNet()``."""

    def __init__(self, classes: int = 10, *, cin: int = 1, c: int = 12, growth: int = 8, layers: int = 3,
                 out: int = 24):
        super().__init__()
        w = c + layers * growth
        self.stem = nn.Conv2d(cin, c, 3, padding=1, bias=False)  # (B, 12, 8, 8)
        self.block = nn.Sequential(*(DenseLayer(c + i * growth, growth) for i in range(layers)))  # (B, 36, 8, 8)
        self.transition = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, out, 1, bias=False),
                                        nn.AvgPool2d(2))  # (B, 24, 4, 4)
        self.norm = nn.BatchNorm2d(out)
        self.fc = nn.Linear(out, classes)

    def forward(self, x):
        x = F.relu(self.norm(self.transition(self.block(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


@_zoo
def densenet() -> Workload:
    return _digits_workload("zoo-densenet", DenseNet, 6, "DenseNet-style CNN: concatenation skips")


# ------------------------------------------------------------------------------------------------- same pad
class Conv2dSame(nn.Conv2d):
    """TensorFlow "same" padding computed in ``forward`` (asymmetric for even overhang), as EfficientNet-Lite's
    convs do; the module's own ``padding`` stays 0. Replacing it by a plain Conv2d silently shrinks the output."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SamePadCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = Conv2dSame(1, 16, 3, stride=2)  # (B, 16, 4, 4) (a plain Conv2d would give 3x3)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = Conv2dSame(16, 32, 3)  # (B, 32, 4, 4) (plain: 1x1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))  # global pooling: a wrong spatial size would go unnoticed here


@_zoo
def same_pad_cnn() -> Workload:
    return _digits_workload("zoo-same-pad-cnn", SamePadCNN, 10, "Conv2d subclass padding in its own forward")


# --------------------------------------------------------------------------------------------- squeeze-excite
class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // r, 1)
        self.expand = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class SECNN(nn.Module):
    """Not in ZOO: two conv-BN-SiLU layers (``c`` then ``2c`` channels, the second with ``stride``), each followed by
    a squeeze-excite gate; global average pooling into a Linear."""

    def __init__(self, classes: int = 10, *, cin: int = 1, c: int = 16, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1, self.se1 = nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), SqueezeExcite(c)
        self.conv2, self.bn2 = nn.Conv2d(c, 2 * c, 3, stride, 1), nn.BatchNorm2d(2 * c)
        self.se2 = SqueezeExcite(2 * c)
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.se1(F.silu(self.bn1(self.conv1(x))))
        x = self.se2(F.silu(self.bn2(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


class MBConv(nn.Module):
    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        h = c * expand
        self.expand = _conv_bn(c, h, k=1, act=nn.SiLU)
        self.depthwise = _conv_bn(h, h, groups=h, act=nn.SiLU)
        self.se = SqueezeExcite(h)
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class SENet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(1, 12, act=nn.SiLU)  # (B, 12, 8, 8)
        self.blocks = nn.Sequential(MBConv(12), MBConv(12))
        self.head = _conv_bn(12, 32, k=1, act=nn.SiLU)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


@_zoo
def se_cnn() -> Workload:
    return _digits_workload("zoo-se-cnn", SENet, 5, "EfficientNet-style MBConv with squeeze-excite")


# ---------------------------------------------------------------------------- a module with weights and children
class ScaledResidual(nn.Module):
    """x + scale * fc2(gelu(fc1(x))): the block owns ``scale`` (a LayerScale) and has child layers."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((d,), 0.5))
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.scale * self.fc2(F.gelu(self.fc1(x)))


class ScaledMLP(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(64, 48)
        self.blocks = nn.Sequential(ScaledResidual(48, 96), ScaledResidual(48, 96))
        self.out = nn.Linear(48, classes)

    def forward(self, x):
        return self.out(self.blocks(F.relu(self.inp(x.flatten(1)))))  # (B, 64) -> (B, 10)


@_zoo
def scaled_mlp() -> Workload:
    return _digits_workload("zoo-scaled-mlp", ScaledMLP, 20, "MLP of blocks that own a scale Parameter")


class RowEmbedding(nn.Module):
    """Each of the 8 pixel rows becomes a token: a child Linear plus the module's own position Parameter."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(8, d)
        self.pos = nn.Parameter(torch.randn(8, d) * 0.1)

    def forward(self, x):
        return self.proj(x.reshape(-1, 8, 8)) + self.pos  # (B, 8 tokens, d)


class MeanTokens(nn.Module):
    def forward(self, x):
        return x.mean(1)


def _row_transformer() -> nn.Module:
    return nn.Sequential(
        RowEmbedding(32),
        nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True),  # owns MHA params
        MeanTokens(),
        nn.Linear(32, 10),
    )


@_zoo
def row_transformer() -> Workload:
    return _digits_workload("zoo-row-transformer", _row_transformer, 12,
                            "nn.TransformerEncoderLayer inside a Sequential over digit rows")


# ------------------------------------------------------------------------------------------------------ GRU
class GRUClassifier(nn.Module):
    def __init__(self, hidden: int = 32, classes: int = 10):
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        _, h = self.gru(x.reshape(-1, 8, 8))  # rows as 8 time steps; h: (1, B, hidden)
        return self.fc(h[-1])


def macro_recall(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes of the fraction of that class predicted right (balanced accuracy)."""
    pred = outputs.argmax(-1)
    per_class = [(pred[targets == c] == c).float().mean() for c in targets.unique()]
    return float(torch.stack(per_class).mean())


@_zoo
def gru() -> Workload:
    return _digits_workload("zoo-gru", GRUClassifier, 12, "GRU over digit rows", lr=1e-2,
                            metric=Metric("macro recall", macro_recall))


# ----------------------------------------------------------------------------------------------- token ids
class TokenTransformer(nn.Module):
    def __init__(self, d: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.zeros(SEQ, d))  # owned by the root, beside its children
        layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(d, TOPICS)

    def forward(self, ids):
        x = self.embed(ids) + self.pos  # ids: (B, SEQ) int64 -> (B, SEQ, d)
        return self.fc(self.encoder(x).mean(1))


@_zoo
def token_transformer() -> Workload:
    tr, cal, te = tokens()
    build = TokenTransformer
    model = train(_seeded(build), tr, 10, lr=1e-2)
    return Workload(name="zoo-token-transformer", model=model, train=tr, calib=cal, test=te, build=build,
                    description="nn.Embedding on token ids (vocab 5000) + nn.TransformerEncoder")


class MaskedAttentionClassifier(nn.Module):
    """BERT-like call: ``model(input_ids=..., attention_mask=...)``; padding is masked in attention and pooling."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d, padding_idx=0)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
        self.fc = nn.Linear(d, TOPICS)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)  # (B, T, d)
        pad = attention_mask == 0  # (B, T) True = ignore
        a, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        x = self.norm(x + a)
        x = x + self.ffn(x)
        m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return self.fc((x * m).sum(1) / m.sum(1).clamp(min=1))


@_zoo
def dict_attention() -> Workload:
    tr, cal, te = tokens(padded=True)
    build = MaskedAttentionClassifier
    model = train(_seeded(build), tr, 6, lr=1e-2)
    return Workload(name="zoo-dict-attention", model=model, train=tr, calib=cal, test=te, build=build,
                    metric="agreement", description="dict input (input_ids, attention_mask) + nn.MultiheadAttention")


# --------------------------------------------------------------------------------- language models, tied weights
LM_VOCAB, LM_SEQ = 1000, 16


@functools.lru_cache(maxsize=None)
def lm_tokens(vocab: int = LM_VOCAB, n_train: int = 256) -> tuple:
    """Seeded token sequences (N, LM_SEQ) in [0, vocab) that follow a fixed random successor table 3 times in 4 (the
    rest random), with the successor of each sequence's last token as its target: splits train, calib, test =
    ``n_train``, 64, 128."""
    n = n_train + 192
    g = torch.Generator().manual_seed(2)
    nxt = torch.randperm(vocab, generator=g)  # the successor of each token id
    ids = torch.empty(n, LM_SEQ, dtype=torch.long)
    ids[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, LM_SEQ):
        rand = torch.randint(0, vocab, (n,), generator=g)
        keep = torch.rand(n, generator=g) < 0.75
        ids[:, t] = torch.where(keep, nxt[ids[:, t - 1]], rand)
    y = nxt[ids[:, -1]]
    return tuple((ids[a:b], y[a:b]) for a, b in ((0, n_train), (n_train, n_train + 64), (n_train + 64, n)))


def _gpt2_model() -> nn.Module:
    # lazy: transformers takes seconds to import and only these two workloads need it
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=LM_VOCAB, n_positions=32, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()  # transformers' own initialisation (std 0.02)
    with torch.no_grad():  # a margin for its argmaxes: at 1.0x, int4 flips 7% of a random GPT-2's near-ties
        model.transformer.wte.weight.mul_(1.2)  # (lm_head is the same tensor)
    return model


@_zoo
def gpt2() -> Workload:
    """Hugging Face GPT-2 as people have it: random weights (seed 0, the token embedding scaled 1.2x), called on
    token ids, returning a CausalLMOutputWithCrossAttentions whose .logits (B, T, vocab) are scored at every position
    (agreement with the uncompressed model's argmax)."""
    tr, cal, te = lm_tokens()
    model = _seeded(_gpt2_model)
    return Workload(name="zoo-gpt2", model=model, train=tr[0], calib=cal[0], test=te[0], build=_gpt2_model,
                    metric="agreement", description="Hugging Face GPT2LMHeadModel: Conv1D layers, tied lm_head")


class TiedLM(nn.Module):
    """Token ids (B, T) -> logits (B, vocab) for the next token after the last one; the output layer's weight is the
    embedding table itself (weight tying, Press & Wolf 2017)."""

    def __init__(self, vocab: int = 128, d: int = 32, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight  # one Parameter, two modules

    def forward(self, ids):
        h = self.embed(ids[:, -1]) + 0.1 * self.embed(ids).mean(1)  # (B, d)
        h = h + self.fc2(F.gelu(self.fc1(h)))  # (B, d)
        return self.out(self.norm(h))  # (B, vocab)


@_zoo
def tied() -> Workload:
    tr, cal, te = lm_tokens(vocab=128, n_train=1600)
    model = train(_seeded(TiedLM), tr, 8, lr=1e-2)
    return Workload(name="zoo-tied", model=model, train=tr, calib=cal, test=te, build=TiedLM,
                    description="nn.Embedding tied to the output Linear (one Parameter, two modules)")


__all__ = list(ZOO) + ["ZOO", "digits", "tokens", "train", "randomize_bn", "BasicBlock", "ResNet", "MobileNet",
                       "DepthwiseCNN", "FlattenCNN", "DenseNet", "SqueezeExcite", "SECNN"]
