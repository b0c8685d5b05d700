"""Bad prompts, images and labels, fuzzed: the outcome is a valid mask or a ``ValueError``
that names the problem, never another exception, and labels are unchanged on error.

The 1,000-example properties run the real predictor, transforms, upsampling and label
writes around :class:`stub_sam.DiscSam` (microseconds per decode); the same prompts also
go through the tiny random-weight SAM in a separate, smaller property. Each test records
how many examples ran (printed at the end of the run).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_sam.image import to_model_image
from napari_sam.predictor import Predictor
from napari_sam.prompts import Prompt
from napari_sam.session import Session
from stub_sam import disc_predictor

EXAMPLES = 1000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: words a message must contain one of: it names what was wrong. Whole words (or their
#: plurals): "id" must not be found in "invalid", "width" or "provide".
PROBLEM_WORDS = ("point", "box", "mask", "prompt", "label", "image", "channel", "contrast",
                 "dtype", "shape", "id")  # fmt: skip
_PROBLEM = re.compile(rf"\b(?:{'|'.join(PROBLEM_WORDS)})(?:e?s)?\b")

NAN, INF = float("nan"), float("inf")
ODD_FLOATS = st.sampled_from([NAN, INF, -INF, -0.5, -0.51, 1e308, -1e308, 0.0, 1e-300])
IMAGE_SHAPES = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.sampled_from([(1, 1), (1, 3000), (2500, 1), (2, 700)]),  # extreme aspect ratios
)
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
IMAGE_DTYPES = [np.bool_, *INT_DTYPES, np.float16, np.float32, np.float64]


class Counter:
    def __init__(self) -> None:
        self.n = 0


@pytest.fixture
def examples(report_line):
    """Counts the examples a property ran and reports the count at the end of the run."""
    counter = Counter()
    yield counter
    report_line(f"{counter.n} hypothesis examples ran")


def _assert_names_problem(exc: ValueError) -> None:
    assert _PROBLEM.search(str(exc).lower()), f"unclear message: {exc!r}"


@st.composite
def coordinate(draw, extent: int):
    """A coordinate along an axis of ``extent`` pixels: mostly inside, sometimes just
    outside, far outside or not finite."""
    return draw(
        st.one_of(
            st.floats(-0.5, extent - 0.5, exclude_max=True),
            st.floats(-3 * extent, 3 * extent),
            ODD_FLOATS,
        )
    )


@st.composite
def prompts_for(draw, shape: tuple[int, int]):
    """(points (N, 2), labels (N,), box or None, mask or None) as raw user data: points
    repeated (duplicates, thousands), labels sometimes invalid, boxes inverted / empty /
    outside, masks sometimes of the wrong shape or empty."""
    rows, cols = shape
    n = draw(st.integers(0, 5))
    pts = [(draw(coordinate(rows)), draw(coordinate(cols))) for _ in range(n)]
    labels = [draw(st.sampled_from([0, 1, 1, 1, -1, 2])) for _ in range(n)]
    repeat = draw(st.sampled_from([1] * 12 + [2, 2000]))
    points = np.tile(np.array(pts, dtype=np.float64).reshape(-1, 2), (repeat, 1))
    labels = np.tile(np.array(labels, dtype=np.int64), repeat)
    box = None
    if draw(st.booleans()):
        box = [draw(coordinate(rows)), draw(coordinate(cols)),
               draw(coordinate(rows)), draw(coordinate(cols))]  # fmt: skip
        if draw(st.booleans()):  # zero area along one axis
            box[2] = box[0]
    mask = None
    if draw(st.integers(0, 5)) == 0:
        mshape = draw(st.sampled_from([shape, (rows + 1, cols), (3, 3)]))
        mask = draw(hnp.arrays(np.bool_, mshape)) if max(mshape) <= 64 else np.ones(mshape, bool)
    return points, labels, box, mask


def _check_prediction(result, shape) -> None:
    assert len(result.masks) >= 1
    for m in result.masks:
        assert m.shape == shape and m.crop.dtype == np.bool_
        r0, c0, r1, c1 = m.bbox
        assert 0 <= r0 <= r1 <= shape[0] and 0 <= c0 <= c1 <= shape[1]
    assert np.isfinite(result.scores).all(), "a mask with a NaN score: a bad prompt got through"


def _predict_or_value_error(predictor, embeddings, shape, raw) -> None:
    points, labels, box, mask = raw
    if shape not in embeddings:
        embeddings[shape] = predictor.embed(np.zeros(shape, np.float32))
    try:
        prompt = Prompt(points=points, labels=labels, box=box, mask=mask)
        result = predictor.predict(embeddings[shape], prompt)
    except ValueError as exc:
        _assert_names_problem(exc)
        return
    _check_prediction(result, shape)


def test_fuzz_prompts_give_a_mask_or_a_clear_error(examples):
    predictor, embeddings = disc_predictor(), {}

    @FUZZ
    @given(st.data())
    def prop(data):
        examples.n += 1
        shape = data.draw(IMAGE_SHAPES)
        _predict_or_value_error(predictor, embeddings, shape, data.draw(prompts_for(shape)))

    prop()
    assert examples.n >= EXAMPLES


def test_fuzz_prompts_through_the_tiny_sam(tiny_sam, report_line):
    """The same prompts through real (random-weight) SAM layers: fewer examples, as each
    decode costs ~0.1 s here."""
    predictor, embeddings = Predictor(tiny_sam), {}
    count = Counter()

    @settings(FUZZ, max_examples=40)
    @given(st.data())
    def prop(data):
        count.n += 1
        shape = data.draw(st.sampled_from([(48, 64), (1, 300), (30, 2)]))
        raw = data.draw(prompts_for(shape))
        points, labels, box, mask = raw
        if len(points) > 50:  # thousands of points: covered by the stub property
            raw = (points[:50], labels[:50], box, mask)
        _predict_or_value_error(predictor, embeddings, shape, raw)

    prop()
    report_line(f"{count.n} hypothesis examples ran (tiny SAM)")


# ------------------------------------------------------------------------------- images


@st.composite
def images(draw):
    """Any dtype napari shows as an image, in 2D, RGB(A), channel-first and wrong shapes,
    with values anywhere in the dtype's range (NaN and inf included)."""
    dtype = np.dtype(draw(st.sampled_from(IMAGE_DTYPES)))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    shape = draw(st.sampled_from([(h, w), (h, w), (h, w, 3), (h, w, 4), (1, h, w),
                                  (2, h, w), (3, h, w), (5, h, w), (h,), (2, 3, h, w),
                                  (0, w), (h, 0, 3), (1, 2500)]))  # fmt: skip
    elements = hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True)
    if draw(st.booleans()):
        data = draw(hnp.arrays(dtype, shape, elements=elements))
    else:  # a constant image (flat contrast) of an extreme value
        data = np.full(shape, draw(elements), dtype=dtype)
    return data


LIMITS = st.one_of(
    st.none(),
    st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)),
    st.tuples(st.integers(0, 300), st.integers(0, 300)),
    st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=5),
)
CHANNELS = st.one_of(
    st.none(),
    st.integers(-6, 6),
    st.lists(st.integers(-6, 6), min_size=0, max_size=4).map(tuple),
    st.sampled_from(["composite", "red"]),
)


def test_fuzz_images_of_any_dtype_and_shape(examples):
    predictor = disc_predictor()

    @FUZZ
    @given(images(), st.sampled_from([None, True, False]), CHANNELS, LIMITS)
    def prop(data, rgb, channel, limits):
        examples.n += 1
        kwargs = {"rgb": rgb, "channel": channel, "contrast_limits": limits}
        try:
            model_image = to_model_image(data, **kwargs)
            embedding = predictor.embed(data, **kwargs)
        except ValueError as exc:
            _assert_names_problem(exc)
            return
        rows, cols = model_image.shape[:2]
        assert model_image.shape == (rows, cols, 3)
        assert model_image.dtype in (np.uint8, np.float32)
        assert np.isfinite(model_image).all()
        assert model_image.min() >= 0 and model_image.max() <= 255
        assert embedding.original_size == (rows, cols)
        result = predictor.predict(embedding, Prompt.from_points([[rows // 2, cols // 2]]))
        _check_prediction(result, (rows, cols))

    prop()
    assert examples.n >= EXAMPLES


# ------------------------------------------------------------------------------- labels


@st.composite
def label_arrays(draw, shape: tuple[int, int]):
    """An existing label image: any integer dtype, sometimes of the wrong shape, holding
    small ids, or ids at the top of the dtype (so the next free id does not fit)."""
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
    lshape = draw(st.sampled_from([shape, shape, shape, (shape[0] + 1, shape[1]), (2, *shape)]))
    info = np.iinfo(dtype)
    values = st.one_of(st.integers(0, 3), st.sampled_from([info.max, info.min, 0]))
    return draw(hnp.arrays(dtype, lshape, elements=values))


ID = st.one_of(
    st.integers(1, 40),
    st.sampled_from([0, -1, 127, 128, 255, 256, 65536, 2**31, 2**63, 2**64]),
)
IDS = st.one_of(st.none(), st.lists(ID, min_size=1, max_size=3))


def test_fuzz_segment_into_labels_of_any_integer_dtype(examples):
    session = Session(disc_predictor())

    @FUZZ
    @given(st.data())
    def prop(data):
        examples.n += 1
        shape = data.draw(st.tuples(st.integers(1, 24), st.integers(1, 24)))
        image = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
        prompts = []
        for _ in range(data.draw(st.integers(1, 3))):
            points, labels, box, mask = data.draw(prompts_for(shape))
            try:
                prompts.append(Prompt(points=points, labels=labels, box=box, mask=mask))
            except ValueError as exc:
                _assert_names_problem(exc)
        if not prompts:
            return
        labels = data.draw(label_arrays(shape))
        ids = data.draw(st.one_of(IDS, st.lists(ID, min_size=len(prompts), max_size=len(prompts))))
        before = labels.copy()
        try:
            out = session.segment(image, prompts, ids=ids, labels=labels)
        except ValueError as exc:
            _assert_names_problem(exc)
            np.testing.assert_array_equal(labels, before, err_msg="labels changed on error")
            return
        assert out is labels and out.dtype == before.dtype
        changed = labels != before
        written = {int(v) for v in np.unique(labels[changed])} - {0}
        if ids is None:  # one new id per prompt, counting on from the largest id there
            top = int(before.max(initial=0))
            wanted = set(range(top + 1, top + 1 + len(prompts)))
        else:
            wanted = set(ids)
        assert written <= wanted
        cleared = changed & (labels == 0)  # an object re-segmented: its old pixels
        assert np.isin(before[cleared], list(wanted)).all()
        other = (before != 0) & ~np.isin(before, list(wanted))
        assert not (changed & other).any(), "another object's pixels were overwritten"

    prop()
    assert examples.n >= EXAMPLES


# ---------------------------------------------------------- regressions the fuzzing found


def test_a_bad_second_id_leaves_labels_and_layer_unchanged():
    from napari.layers import Image, Labels

    session = Session(disc_predictor())
    image = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    prompts = [Prompt.from_points([[5, 5]]), Prompt.from_points([[15, 15]])]
    labels = np.zeros((20, 20), np.int8)
    with pytest.raises(ValueError, match="does not fit"):
        session.segment(image, prompts, ids=[5, 128], labels=labels)
    assert not labels.any()

    layer = Labels(np.full((20, 20), 0, np.int8))
    layer.data[0, 0] = 126  # the points' object gets 127, the box the next id: 128
    from napari.layers import Points, Shapes

    with pytest.raises(ValueError, match="does not fit"):
        session.segment_layers(
            Image(image), layer, points=Points([[5, 5]]), shapes=Shapes([[[10, 10], [18, 18]]],
                                                                        shape_type="rectangle"),
        )  # fmt: skip
    assert layer.data.sum() == 126 and layer.data[0, 0] == 126


def test_nan_points_huge_boxes_and_thin_images_are_handled():
    predictor = disc_predictor()
    embedding = predictor.embed(np.zeros((1, 3000), np.float32))  # was: RuntimeError
    assert embedding.geometry.input_size == (1, 64)
    with pytest.raises(ValueError, match="not a finite position"):
        Prompt.from_points([[0, np.nan]])  # was: accepted, then an empty mask of score NaN
    embedding = predictor.embed(np.zeros((40, 30), np.float32))
    result = predictor.predict(embedding, Prompt(box=[0, 0, 1e308, 20]))  # was: NaN score
    assert np.isfinite(result.scores).all()
    r0, c0, r1, c1 = result.masks[0].bbox  # the box, clipped to the image
    assert (r0, c0, r1) == (0, 0, 40) and 20 <= c1 <= 23
