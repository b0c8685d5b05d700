"""What the widget needs around :func:`napari_sam.propagation.propagate` (no Qt here): the prompts
along the chosen axis, and a sentence saying how far the object went and why it stopped."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from napari_sam.prompts import Prompt
from napari_sam.propagation import Propagation, axis_slices


def annotations_along(
    prompts_at: Callable[[tuple[int, ...]], list[Prompt]],
    leading_shape: Sequence[int],
    axis: int,
    at: Sequence[int],
) -> tuple[dict[int, Prompt], list[int]]:
    """The user's prompts on every slice along leading axis ``axis`` through ``at`` (the
    displayed slice's leading indices): ``({position: prompt}, flat slice indices)``.
    ``prompts_at(index)`` gives the objects prompted on slice ``index``. Raises
    ``ValueError`` (a message for the user) when a slice holds several objects or none has
    a prompt."""
    slices = axis_slices(leading_shape, axis, at)
    annotations: dict[int, Prompt] = {}
    for position in range(leading_shape[axis]):
        index = list(at)
        index[axis] = position
        found = prompts_at(tuple(index))
        if len(found) > 1:
            raise ValueError(f"slice {position} holds {len(found)} objects: segment one "
                             "object at a time through the stack (one box or one set of "
                             "points per slice)")  # fmt: skip
        if found:
            annotations[position] = found[0]
    if not annotations:
        raise ValueError("nothing to follow: add a point or a box on the object first")
    return annotations, slices


def summary(
    result: Propagation,
    label_id: int,
    axis_name: str,
    n_positions: int,
    negatives: Sequence[int] = (),
) -> str:
    """E.g. ``"Label 3 on 14 slices (z 4-17, from z 11); stopped before z 3: empty mask"``.
    ``negatives``: positions the user marked with negative points only."""
    if not result.positions:
        return f"Label {label_id}: the object was found on no slice."
    first, last = result.positions[0], result.positions[-1]
    sources = sorted(set(result.sources))
    text = (f"Label {label_id} on {len(result.positions)} slice"
            f"{'s' if len(result.positions) != 1 else ''} ({axis_name} {first}-{last}, from "
            f"{axis_name} {', '.join(map(str, sources))})")  # fmt: skip
    ends = []
    for stop in result.stops:
        ends.append(f"stopped before {axis_name} {stop.position}: {stop.reason}")
    for position in sorted(negatives):
        if position in (first - 1, last + 1):
            ends.append(f"stopped before {axis_name} {position}: only negative points there")
    if first == 0:
        ends.append("reached the first slice")
    if last == n_positions - 1:
        ends.append("reached the last slice")
    doubtful = result.doubtful()
    if doubtful:
        by_position = dict(zip(result.positions, result.confidence))
        listed = ", ".join(f"{axis_name} {p} ({by_position[p]:.2f})" for p in doubtful[:5])
        more = f" and {len(doubtful) - 5} more" if len(doubtful) > 5 else ""
        ends.append(f"doubtful: {listed}{more}")
    return text + ("; " + "; ".join(ends) if ends else "") + "."


def continuation(position: int, source: int | None) -> str:
    """The direction to carry a correction on in: re-prompting ``position`` of an object
    propagated from ``source`` redoes the slices beyond it, away from the source (``"both"``
    when it is the source or there is none)."""
    if source is None or position == source:
        return "both"
    return "forward" if position > source else "backward"
