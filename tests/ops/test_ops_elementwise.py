"""Element-wise ops against the official runtime: every UnaryOpOperation and BinaryOpOperation MNN's
CPU backend implements (float and int32), fused ReLU, ReLU/LeakyReLU/ReLU6/PReLU, Sigmoid/TanH op
types, Scale, Select, Cast, Eltwise.  Operations the converter never writes are reached by patching
the parameter table of a converted one-node model."""
import numpy as np
import pytest

from mnnlite.errors import UnsupportedOpError
from mnnlite.format.tables import TABLE_CLASSES as T
from mnnlite.format.tables import BinaryOpOperation as B
from mnnlite.format.tables import OpType
from mnnlite.format.tables import UnaryOpOperation as U
from mnnlite.ops import elementwise
from opcases import chain, check, materialize, node, rng

R = rng(4)
SHAPE = (2, 3, 4, 5)


def _uniform(lo, hi, shape=SHAPE):
    return R.uniform(lo, hi, shape).astype(np.float32)


def _op(model, op_type):
    return next(op for op in model.graph.ops if op.type == op_type)


# ------------------------------------------------------------------------------------------- unary

DOMAIN = {  # inputs inside each function's domain (NaN handling is not what these cases test)
    U.ASIN: (-0.99, 0.99), U.ACOS: (-0.99, 0.99), U.ATANH: (-0.99, 0.99), U.ERFINV: (-0.99, 0.99),
    U.ACOSH: (1.0, 5.0), U.SQRT: (0.1, 5.0), U.RSQRT: (0.1, 5.0), U.LOG: (0.1, 5.0), U.LOG1P: (-0.9, 5.0),
    U.TAN: (-1.4, 1.4), U.GELU: (-7.0, 7.0), U.GELU_STANDARD: (-6.0, 6.0), U.HARDSWISH: (-5.0, 5.0),
    U.EXP: (-5.0, 5.0), U.EXPM1: (-5.0, 5.0), U.SINH: (-5.0, 5.0), U.COSH: (-5.0, 5.0),
    U.SIGMOID: (-20.0, 20.0), U.TANH: (-10.0, 10.0), U.SILU: (-20.0, 20.0), U.BNLL: (-20.0, 20.0),
}


def _unary_input(op):
    if op == U.ROUND:         # halves: MNN rounds them away from zero
        return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 9 - 4 + 0.5).astype(np.float32)
    if op == U.RECIPROCAL:
        return (_uniform(0.2, 3.0) * np.sign(_uniform(-1, 1))).astype(np.float32)
    if op == U.SIGN:
        x = _uniform(-3, 3)
        x.reshape(-1)[::7] = 0
        return x
    return _uniform(*DOMAIN.get(op, (-4.0, 4.0)))


def unary_patch(op_value, op_type=None):
    def patch(model):
        op = _op(model, OpType.UnaryOp)
        if op_type is not None:
            op.type, op.main = int(op_type), None
        else:
            op.main.opType = int(op_value)
    patch.__name__ = f"unary_{int(op_value)}_{op_type or 0}"
    return patch


UNARY_CASES = [node(f"unary_{op.name}", "Abs", {"x": _unary_input(op)}, patch=unary_patch(op)) for op in U]
UNARY_CASES += [
    node("optype_Sigmoid", "Abs", {"x": _uniform(-9, 9)}, patch=unary_patch(0, OpType.Sigmoid)),
    node("optype_TanH", "Abs", {"x": _uniform(-9, 9)}, patch=unary_patch(0, OpType.TanH)),
]
INT_UNARY = [U.ABS, U.NEG, U.SQUARE, U.SIGN]
XI = R.integers(-50, 50, SHAPE).astype(np.int32)
UNARY_CASES += [node(f"unary_int_{op.name}", "Abs", {"x": XI}, out_elem="int32", patch=unary_patch(op))
                for op in INT_UNARY]

# ------------------------------------------------------------------------------------------ binary

FLOAT_BINARY = [B.ADD, B.SUB, B.MUL, B.REALDIV, B.MINIMUM, B.MAXIMUM, B.POW, B.ATAN2, B.SquaredDifference,
                B.FLOORDIV, B.FLOORMOD, B.MOD, B.GREATER, B.GREATER_EQUAL, B.LESS, B.LESS_EQUAL, B.EQUAL,
                B.NOTEQUAL]
INT_BINARY = [B.ADD, B.SUB, B.MUL, B.MINIMUM, B.MAXIMUM, B.SquaredDifference, B.REALDIV, B.FLOORDIV,
              B.FLOORMOD, B.MOD, B.POW, B.LOGICALOR, B.LOGICALXOR, B.BITWISE_AND, B.BITWISE_OR, B.BITWISE_XOR,
              B.LEFTSHIFT, B.RIGHTSHIFT, B.GREATER, B.GREATER_EQUAL, B.LESS, B.LESS_EQUAL, B.EQUAL, B.NOTEQUAL]
COMPARE = {B.GREATER, B.GREATER_EQUAL, B.LESS, B.LESS_EQUAL, B.EQUAL, B.NOTEQUAL}


def binary_patch(op_value, activation=0):
    def patch(model):
        main = _op(model, OpType.BinaryOp).main
        main.opType, main.activationType = int(op_value), activation
    patch.__name__ = f"binary_{int(op_value)}_{activation}"
    return patch


def _float_operands(op, b_shape):
    a = _uniform(-3, 3)
    b = (_uniform(0.5, 2.5, b_shape) * np.where(R.random(b_shape) < 0.5, -1, 1)).astype(np.float32)
    if op == B.POW:
        a = _uniform(0.1, 3)
    if op in COMPARE:        # make equal pairs happen
        b = np.round(b)
        a = np.round(a).astype(np.float32)
    return a, b


def _int_operands(op, b_shape):
    a = R.integers(-40, 40, SHAPE).astype(np.int32)
    b = R.integers(1, 9, b_shape).astype(np.int32) * np.where(R.random(b_shape) < 0.5, -1, 1).astype(np.int32)
    if op in (B.LEFTSHIFT, B.RIGHTSHIFT):
        b = R.integers(0, 31, b_shape).astype(np.int32)
    if op == B.POW:
        a, b = R.integers(-5, 6, SHAPE).astype(np.int32), R.integers(0, 5, b_shape).astype(np.int32)
    if op in (B.LOGICALOR, B.LOGICALXOR):
        a, b = R.integers(-2, 3, SHAPE).astype(np.int32), R.integers(-2, 3, b_shape).astype(np.int32)
    return a, b


BINARY_CASES = []
for b_shape, tag in ((SHAPE, "same"), ((3, 1, 5), "bcast"), ((1,), "scalar")):
    for op in FLOAT_BINARY:
        a, b = _float_operands(op, b_shape)
        out = "int32" if op in COMPARE else "float32"
        BINARY_CASES.append(node(f"binary_{op.name}_{tag}", "Add", {"a": a, "b": b}, out_elem=out,
                                 patch=binary_patch(op)))
    for op in INT_BINARY:
        a, b = _int_operands(op, b_shape)
        BINARY_CASES.append(node(f"binary_int_{op.name}_{tag}", "Add", {"a": a, "b": b}, out_elem="int32",
                                 patch=binary_patch(op)))
SPECIAL = np.array([-0.0, 0.0, -1.0, -2.0, 1.0, 2.0, -1.5, 3.0], np.float32)
SPECIAL_A, SPECIAL_B = np.repeat(SPECIAL, 8).reshape(8, 8), np.tile(SPECIAL, 8).reshape(8, 8)
for op in COMPARE | {B.MINIMUM, B.MAXIMUM, B.SUB}:     # signed zeros and negative pairs
    BINARY_CASES.append(node(f"binary_{op.name}_special", "Add", {"a": SPECIAL_A, "b": SPECIAL_B},
                             out_elem="int32" if op in COMPARE else "float32", patch=binary_patch(op)))
BINARY_CASES += [
    node("binary_relu_SUB", "Add", {"a": _uniform(-3, 3), "b": _uniform(-3, 3, (4, 5))},
         patch=binary_patch(B.SUB, 1)),
    node("binary_relu_int_SUB", "Add", {"a": XI, "b": XI[:1]}, out_elem="int32", patch=binary_patch(B.SUB, 1)),
    node("binary_MUL_SILU", "Add", {"a": _uniform(-3, 3), "b": _uniform(-6, 6)}, patch=binary_patch(B.MUL_SILU)),
    node("onnx_mod_int", "Mod", {"a": XI, "b": _int_operands(B.MOD, SHAPE)[1]}, out_elem="int32"),
    node("onnx_fmod_float", "Mod", {"a": _uniform(-5, 5), "b": _float_operands(B.MOD, SHAPE)[1]}, fmod=1),
]

# ---------------------------------------------------------------------------------- activations & co

X = R.standard_normal(SHAPE).astype(np.float32)


def prelu_patch(model):
    """PReLU runs on NC4HW4 tensors only: turn the Scale of a converted BatchNormalization into it."""
    op = _op(model, OpType.Scale)
    op.type, op.main = int(OpType.PReLU), T["PRelu"](slopeCount=3, slope=np.array([0.1, -0.5, 2.0], np.float32))


def eltwise_patch(kind, coeff=None):
    def patch(model):
        op = _op(model, OpType.BinaryOp)
        op.type = int(OpType.Eltwise)
        op.main = T["Eltwise"](type=kind, coeff=None if coeff is None else np.array(coeff, np.float32))
    patch.__name__ = f"eltwise_{kind}_{coeff}"
    return patch


def cast_to(dst):
    def patch(model):
        _op(model, OpType.Cast).main.dstT = dst
    patch.__name__ = f"cast_to_{dst}"
    return patch


CAST_SRC = np.array([[-2.7, -1.5, -0.5, -0.0, 0.0, 0.4, 0.5, 1.5, 2.6, 100.9, -100.9, 7.0]], np.float32)
ACT_CASES = [
    node("relu", "Relu", {"x": X}),
    node("elu", "Elu", {"x": X * 3}, alpha=0.7),
    node("selu", "Selu", {"x": X * 3}, alpha=1.6, gamma=1.05),
    node("leaky", "LeakyRelu", {"x": X}, alpha=0.1),
    node("prelu_scalar", "PRelu", {"x": X}, inits={"s": np.array([0.25], np.float32)}),
    node("prelu_channels", "BatchNormalization", {"x": X},
         inits={k: R.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("s", "b", "m", "v")}, patch=prelu_patch),
    node("clip", "Clip", {"x": X}, inits={"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    node("clip_relu6", "Clip", {"x": X * 4}, inits={"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}),
    node("scale_bn", "BatchNormalization", {"x": X},
         inits={k: R.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("s", "b", "m", "v")}, epsilon=1e-3),
    # (MNN's GeometrySelect sizes input 2 by input 1, so a full input 1 with a smaller input 2 reads
    # past input 2: only the broadcasts MNN gets right are compared)
    node("select", "Where", {"c": R.random((3, 1, 5)) < 0.5, "a": _uniform(-1, 1, (4, 5)), "b": X}),
    node("select_full", "Where", {"c": R.random(SHAPE) < 0.5, "a": X, "b": _uniform(-1, 1)}),
    node("cast_f2i", "Cast", {"x": CAST_SRC}, to=6, out_elem="int32"),
    node("cast_f2i64", "Cast", {"x": CAST_SRC}, to=7, out_elem="int64"),
    node("cast_f2b", "Cast", {"x": CAST_SRC}, to=9, out_elem="bool"),
    # 8-bit results go back through a Cast to int32 (the oracle harness reads 32-bit outputs only)
    chain("cast_f2u8", [("Cast", ["x"], ["t"], {"to": 3}), ("Cast", ["t"], ["y"], {"to": 6})],
          {"x": np.abs(CAST_SRC)}, out_elem="int32", patch=cast_to(4)),
    chain("cast_f2i8", [("Cast", ["x"], ["t"], {"to": 3}), ("Cast", ["t"], ["y"], {"to": 6})],
          {"x": CAST_SRC}, out_elem="int32"),
    node("cast_i2f", "Cast", {"x": XI}, to=1),
    node("cast_i2b", "Cast", {"x": XI}, to=9, out_elem="bool"),
    # the converter writes ONNX bool as DT_INT32; DT_BOOL itself means "bits != 0" (Bit32ToBool)
    node("cast_f2bool", "Cast", {"x": CAST_SRC}, to=6, out_elem="int32", patch=cast_to(10)),
    node("cast_i2bool", "Cast", {"x": XI}, to=6, out_elem="int32", patch=cast_to(10)),
]
for kind, name in enumerate(["PROD", "SUM", "MAXIMUM", "SUB"]):
    ACT_CASES.append(node(f"eltwise_{name}", "Add", {"a": X, "b": _uniform(-2, 2)}, patch=eltwise_patch(kind)))
ACT_CASES.append(node("eltwise_coeff_copy", "Add", {"a": X, "b": _uniform(-2, 2)}, patch=eltwise_patch(1, [1, 0])))

CASES = UNARY_CASES + BINARY_CASES + ACT_CASES


@pytest.fixture(scope="module")
def paths():
    return materialize(CASES)


@pytest.mark.parametrize("case", UNARY_CASES, ids=repr)
def test_unary(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", BINARY_CASES, ids=repr)
def test_binary(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", ACT_CASES, ids=repr)
def test_activation_and_friends(case, paths):
    check(case, paths[case.id])


def test_every_operation_is_covered():
    """Each UnaryOp/BinaryOp operation is either tested against the oracle or refused like MNN."""
    assert {f"unary_{op.name}" for op in U} <= {c.id for c in UNARY_CASES}
    refused = set(B) - set(FLOAT_BINARY) - {B.MUL_SILU}
    a = np.ones(3, np.float32)
    for op in refused:
        with pytest.raises(UnsupportedOpError):
            elementwise.binary(int(op), a, a)
    for op in set(B) - set(INT_BINARY) - {B.MUL_SILU}:
        with pytest.raises(UnsupportedOpError):
            elementwise.binary(int(op), a.astype(np.int32), a.astype(np.int32))
    for op in set(U) - set(INT_UNARY):
        with pytest.raises(UnsupportedOpError):
            elementwise.unary(int(op), a.astype(np.int32))


def _erf_erfc_every_term(x):
    """The plain form of elementwise._erf_erfc: all 63 series terms and 60 fraction steps on every value."""
    d = np.asarray(x, np.float64)
    a = np.abs(d)
    small = a < 2.5
    xs = np.where(small, d, 0.0)
    term, total = xs.copy(), xs.copy()
    for n in range(1, 64):
        term = term * (-xs * xs) / n
        total = total + term / (2 * n + 1)
    erf_small = total * (2.0 / np.sqrt(np.pi))
    al = np.where(small, 3.0, a)
    t = al.copy()
    for k in range(60, 0, -1):
        t = al + (0.5 * k) / t
    tail = np.exp(-al * al) / (np.sqrt(np.pi) * t)
    erf = np.where(small, erf_small, np.copysign(1.0 - tail, d))
    erfc = np.where(small, 1.0 - erf_small, np.where(d > 0, tail, 2.0 - tail))
    return erf, erfc


def test_erf_early_exit_gives_the_bits_of_every_term():
    """_erf_erfc stops a value's series once later terms round away, and runs each branch only on its
    values: the same float64 bits as the plain form, on float32 values sweeping [0, 2.5) (every 997th),
    random bit patterns (NaN, inf, denormals), GELU-like normals and the 2.5 boundary."""
    gen = np.random.default_rng(11)
    sweep = np.arange(0, np.float32(2.5).view(np.uint32), 997, dtype=np.uint32).view(np.float32)
    edge = np.float32(2.5)
    cases = [sweep, -sweep, gen.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
             gen.standard_normal(100_000).astype(np.float32) * np.float32(1.5),
             np.array([0.0, -0.0, np.inf, -np.inf, np.nan, edge, -edge, np.nextafter(edge, np.float32(0)),
                       1e-45, -1e-45, 3.4e38], np.float32),
             gen.standard_normal((3, 5, 7)), np.float32(0.7), np.zeros((0, 3), np.float32)]
    with np.errstate(all="ignore"):
        for x in cases:
            for got, want in zip(elementwise._erf_erfc(x), _erf_erfc_every_term(x)):
                assert got.shape == want.shape
                assert np.array_equal(np.atleast_1d(got).view(np.uint64), np.atleast_1d(want).view(np.uint64))
