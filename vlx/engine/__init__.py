"""The prediction engine: batches of items prepared ahead of the model, run through an adapter, decoded into rows.

One batch loop serves every stage that runs a model over items (infer, judge, and the stages to come).
"""
