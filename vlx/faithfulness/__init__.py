"""Faithfulness tests of a run's explanations: does an explanation reflect what drove the model's label?

Each test reruns the run's own model, prompt and decoding on changed inputs and compares the answers with the run's:

- `counterfactual`: words inserted into the item's text (Atanasova et al. 2023); an edit that flips the label while
  the new explanation does not mention the inserted word is unfaithful;
- `image_reliance`: the item's image replaced by a blank of its mean colour, or another item's image; how often the
  label flips, how often label and explanation change apart, and the label's probability change;
- `cc_shap`: Shapley values (`shapley`, with the `shap` library) of image patches and text tokens for the label
  and for the explanation after it: their consistency (CC-SHAP) and the text's share (MM-SHAP), Parcalabescu & Frank;
- `source`: the run as the tests read it (its config, task, items and predictions) and its model, loaded as the run
  loaded it (checked against the run's manifest);
- `rates`: rates over edits with bootstrap intervals drawn over items (`vlx.metrics.bootstrap`);
- `measures`: what each test reports, declared once per test (its numbers, their direction, each item's share of
  them, what a change is, how the review page shows a row); `catalog` the declared tests by name;
- `results`: faithfulness.json as stage=report and W&B show it; `paired`: two runs' numbers compared item by item
  (stage=compare).
"""
