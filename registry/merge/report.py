"""merge_report.json: per-tensor and total diagnostics, and the short printed summary.

The paper's analysis of why merging saturates is the share of the SFT model's surviving (trimmed)
entries that the sign election throws away; TIES-SV's slack rescues some of them.
Deterministic content only (no times, no paths): the report is part of the byte-identical output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.merge.methods.base import TensorStats


@dataclass
class MergeReport:
    """Diagnostics of one merge. `inputs` are the method's non-base inputs (labels), in order."""

    method: str
    inputs: list[str]
    protected: list[int]
    roles: list[str] = field(default_factory=list)  # ct | sft | input, per entry of `inputs`
    sources: list[dict[str, Any]] = field(default_factory=list)  # every input as the model card lists it
    tensors: dict[str, TensorStats] = field(default_factory=dict)

    def add(self, name: str, stats: TensorStats) -> None:
        """Record one tensor's stats."""
        self.tensors[name] = stats

    def totals(self) -> TensorStats:
        """The sum over all tensors."""
        total = TensorStats()
        for name in sorted(self.tensors):
            total.merge(self.tensors[name])
        return total

    def _entry(self, stats: TensorStats) -> dict[str, Any]:
        def by_label(counts: dict[int, int]) -> dict[str, int]:
            return {self.inputs[i]: counts.get(i, 0) for i in self.protected}

        entry: dict[str, Any] = {
            "elements": stats.elements,
            "kept": {label: (stats.kept[i] if i < len(stats.kept) else 0) for i, label in enumerate(self.inputs)},
            "sign_conflicts": stats.sign_conflicts,
        }
        if self.protected:
            entry["protected_discarded"] = by_label(stats.protected_discarded)
            entry["conflicts"] = by_label(stats.conflicts)
            entry["rescued"] = by_label(stats.rescued)
        return entry

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: method, inputs, protected, totals (+ shares), per-tensor entries."""
        total = self.totals()
        totals = self._entry(total)
        shares: dict[str, Any] = {}
        if total.elements:
            shares["sign_conflicts"] = total.sign_conflicts / total.elements
            shares["kept"] = {k: v / total.elements for k, v in totals["kept"].items()}
        for i in self.protected:
            kept = total.kept[i] if i < len(total.kept) else 0
            if kept:
                shares.setdefault("protected_discarded", {})[self.inputs[i]] = (
                    total.protected_discarded.get(i, 0) / kept
                )
        return {
            "method": self.method,
            "inputs": list(self.inputs),
            "roles": list(self.roles),
            "protected": [self.inputs[i] for i in self.protected],
            "totals": totals,
            "shares": shares,
            "summary": self.summary(),
            "sources": list(self.sources),
            "tensors": {name: self._entry(self.tensors[name]) for name in sorted(self.tensors)},
        }

    def write(self, path: Path) -> None:
        """Write the report as stable, sorted, indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def _name(self, index: int) -> str:
        role = self.roles[index] if index < len(self.roles) else ""
        return f"{role} {self.inputs[index]}" if role and role != "input" else self.inputs[index]

    def summary(self) -> str:
        """A few lines for humans: elements, kept shares, conflicts, and what the protected model lost."""
        total = self.totals()
        if not total.elements:
            return f"{self.method}: no diagnostics"
        n = total.elements
        lines = [f"{self.method}: {len(self.tensors)} tensors, {n:,} parameters"]
        if total.kept:
            kept = ", ".join(
                f"{self._name(i)} {total.kept[i] / n:.1%}" for i in range(len(self.inputs)) if i < len(total.kept)
            )
            lines.append(f"  kept after trimming: {kept}")
            lines.append(f"  sign conflicts: {total.sign_conflicts:,} ({total.sign_conflicts / n:.2%} of parameters)")
        for i in self.protected:
            label = self._name(i)
            kept_i = total.kept[i] if i < len(total.kept) else 0
            lost = total.protected_discarded.get(i, 0)
            share = f"{lost / kept_i:.1%}" if kept_i else "n/a"
            line = f"  {label}: {lost:,} of its {kept_i:,} kept entries discarded by the election ({share})"
            if total.conflicts.get(i, 0) != lost or total.rescued.get(i):
                line += f"; conflicts {total.conflicts.get(i, 0):,}, rescued by slack {total.rescued.get(i, 0):,}"
            lines.append(line)
        return "\n".join(lines)
