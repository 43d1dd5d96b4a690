"""The embedded demo model: a small Ministral-architecture model trained here on generated robot
commands, so the node runs out of the box without Ministral 8B (see models/README.md).

Modules: ``phrasings`` (config/demo_phrasings.yaml: word lists and train/held-out templates),
``numbers`` (quantities in digits and words), ``generator`` (seeded requests and their expected
tool calls), ``tokenizer_builder`` (small BPE keeping Mistral's control-token ids), ``dataset``
(sequences rendered by the real planner, with conversation history), ``train`` (the only module that
imports torch), ``evaluate`` (accuracy through the real planner), ``build`` (the whole recipe;
``python -m ministral_ros.demo_model build --work DIR``).

``demo_driver_node`` is not part of the model: it is the scripted robot that ``tools/dev.sh demo``
runs against ``ministral_node`` (which loads this model by default), talking to it over topics only.
"""
