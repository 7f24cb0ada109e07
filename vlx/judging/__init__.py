"""What the judge stage (`vlx.stages.judge`) is made of: the judge's question (`prompts`), and e-ViL's verdict
scale, the parser of the judge's answers and a judged run's verdicts (`verdicts`). The explanation score the verdicts
give is a metric: `vlx.metrics.judge_scores`."""
