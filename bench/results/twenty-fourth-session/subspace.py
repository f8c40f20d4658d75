"""How far the erased and kept prompts' text states share directions (throwaway probe).

    python bench/results/twenty-fourth-session/subspace.py

Every token state of the default sequence's erased prompts against every state of the prompts
of the concepts kept after step 10: the dimensions each set needs for 90/99/99.9 % of its
energy, the kept energy inside the erased set's top-r directions, and the generalized
eigenvalues of the erased second moment over the kept one (directions where erased energy
dominates: the only ones a K/V edit can move without moving kept prompts as much).
"""

from __future__ import annotations

import torch

from workers.conceptworld.cli import MODEL_DIR
from workers.conceptworld.evaluate import retention_sets
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.kv_solve import token_states
from workers.engine.loading import load_model

SEQUENCE = ["zorbo", "blip", "mimi", "outlined", "star", "purple", "gloop", "solid red circle",
            "diamond", "yellow"]


def energy_dims(states: torch.Tensor) -> list[int]:
    power = torch.linalg.svdvals(states) ** 2
    cumulative = power.cumsum(0) / power.sum()
    return [int((cumulative < q).sum()) + 1 for q in (0.9, 0.99, 0.999)]


def main() -> None:
    model = load_model(MODEL_DIR, device="cpu")
    related, general = retention_sets(SEQUENCE)
    erased = token_states(model, [p for c in SEQUENCE for p in CONCEPT_BY_NAME[c].prompts])
    kept = token_states(model, [p for c in related + general for p in CONCEPT_BY_NAME[c].prompts])
    print("states", tuple(erased.shape), tuple(kept.shape))
    print("dims for 90/99/99.9 %: erased", energy_dims(erased), "kept", energy_dims(kept))
    directions = torch.linalg.svd(erased, full_matrices=False).Vh
    for r in (4, 8, 16, 32, 48):
        projector = directions[:r].T @ directions[:r]
        print(f"top-{r} erased directions: erased energy "
              f"{float((erased @ projector).pow(2).sum() / erased.pow(2).sum()):.3f}, kept "
              f"{float((kept @ projector).pow(2).sum() / kept.pow(2).sum()):.3f}")
    width = erased.shape[1]
    moment_e, moment_k = erased.T @ erased / len(erased), kept.T @ kept / len(kept)
    eye = torch.eye(width, dtype=moment_k.dtype)
    ridge = 1e-8 * moment_k.trace() / width
    whiten = torch.linalg.inv(torch.linalg.cholesky(moment_k + ridge * eye))
    ratios = torch.linalg.eigvalsh(whiten @ moment_e @ whiten.T).flip(0)
    print("erased/kept energy ratio, top 12:", [round(float(x), 2) for x in ratios[:12]])
    print("directions with ratio > 2:", int((ratios > 2).sum()), "> 10:", int((ratios > 10).sum()))


if __name__ == "__main__":
    main()
