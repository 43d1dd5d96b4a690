"""The ROS layer: the ``ministral`` lifecycle node and the speech node (the only modules here that
import rclpy, ``*_node.py``), and the rclpy-free pieces they wire together:

- input: ``input_gate`` (refuse / ignore / stop / submit), built on ``input_text`` (text checks) and
  ``stop_words`` (stop detection); ``request_router`` acts on its decisions;
- planning: ``request_queue`` and ``plan_worker`` (the planner's thread), ``cancellation`` (typed
  cancel reasons), ``model_slot`` and ``backend_factory`` (the loaded model);
- reporting: ``diagnostics`` (typed counters and DiagnosticStatus, shared with the speech node),
  ``planner_status`` (the main node's status and diagnostics), ``callback_guards``;
- parameters: ``params`` (the one parameter table), ``param_descriptors``, ``param_docs`` (the
  shipped YAML and the README table, rendered from the table);
- messages and launch: ``plan_messages`` (plans <-> messages), ``launch_config`` (the launch
  file's decisions).
"""
