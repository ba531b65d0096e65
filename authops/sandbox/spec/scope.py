"""Check a planned job against the data scope a scenario approval grants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from authops.core.data.schema import ShareMode
from authops.sandbox.spec import models as m

if TYPE_CHECKING:
    from authops.sandbox.spec.plan import Plan, SchemaMap

# The share modes under which a resource may feed each kind of output. A verify output
# answers a claim (核验); records, statistics and scores are looked up (查询) or exchanged in
# bulk (批量交换). The release policies by grade may narrow this further.
POLICY_SHARE_MODES: dict[str, frozenset[ShareMode]] = {
    "verify": frozenset({ShareMode.VERIFY}),
    "record": frozenset({ShareMode.QUERY, ShareMode.BATCH}),
    "aggregate": frozenset({ShareMode.QUERY, ShareMode.BATCH}),
    "model": frozenset({ShareMode.QUERY, ShareMode.BATCH}),
}


def _modes(share_modes: Mapping[str, Iterable[ShareMode | str]] | Iterable[ShareMode | str],
           resource: str) -> frozenset[ShareMode]:
    got = share_modes.get(resource, ()) if isinstance(share_modes, Mapping) else share_modes
    return frozenset(ShareMode(x) for x in got)


def _said(modes: Iterable[ShareMode]) -> str:
    return " or ".join(sorted(x.value for x in modes)) or "nothing"


def check_scope(spec: Plan | m.JobSpec, allowed: Mapping[str, Iterable[str]],
                share_modes: Mapping[str, Iterable[ShareMode | str]] | Iterable[ShareMode | str] | None = None,
                *, schemas: SchemaMap | None = None) -> list[str]:
    """What in the job lies outside `allowed` (resource -> fields) and the approved share modes.

    Every field an input reads counts, used or not: reading is access. Each problem names the
    field, where the spec uses it and which outputs it reaches. `share_modes` is either one set
    for every resource or a set per resource; None skips that check. An empty list means in scope.
    """
    from authops.sandbox.spec.plan import Plan, build_plan

    if isinstance(spec, m.JobSpec):
        if schemas is None:
            raise TypeError("check_scope needs schemas= to plan a JobSpec; or pass a Plan")
        plan = build_plan(spec, schemas)
    else:
        plan = spec
    assert isinstance(plan, Plan)
    problems: list[str] = []
    reported: set[tuple[str, str]] = set()
    for alias, inp in plan.inputs.items():
        if inp.resource not in allowed:
            problems.append(f"resource {inp.resource!r} (inputs[{alias}]) is outside the approved scope; "
                            f"remove it or have its use approved")
            continue
        ok = set(allowed[inp.resource])
        for f in inp.fields:
            ref = (inp.resource, f)
            if f in ok or ref in reported:
                continue
            reported.add(ref)
            uses = plan.uses.get(ref, ())
            used = f"; it is used in {', '.join(uses)}" if uses else "; nothing uses it, so drop it from the fields"
            reaches = []
            for o in plan.outputs.values():
                cols = [c.name for c in o.columns if ref in c.sources]
                if cols:
                    reaches.append(f"outputs[{o.name}] columns {', '.join(cols)}")
                elif ref in o.influences:
                    reaches.append(f"outputs[{o.name}] (it decides which rows count)")
            reach = f"; it reaches {'; '.join(reaches)}" if reaches else ""
            problems.append(f"field {inp.resource}.{f} is outside the approved scope: inputs[{alias}].fields "
                            f"reads it{used}{reach}")
    if share_modes is None:
        return problems
    for o in plan.outputs.values():
        need = POLICY_SHARE_MODES[o.policy]
        for resource in sorted({r for r, _ in o.reads}):
            have = _modes(share_modes, resource)
            if not have & need:
                problems.append(f"outputs[{o.name}] is {_a(o.policy)} output drawing on {resource!r}, which is "
                                f"approved for {_said(have)}; {_a(o.policy)} output needs {_said(need)}")
    return problems


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word
