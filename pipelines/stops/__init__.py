"""How a run ends early and on time: budgets, deadlines, `spotbatch cancel`, and the drain that
lets a stopped run leave without losing a unit in flight."""
