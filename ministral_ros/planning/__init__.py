"""Command-to-plan core: action vocabulary, constrained function calling, parsing, conversation
history. Never imports rclpy.

Modules:
  plan          - the plan dataclasses (Plan, Action, PlanStatus, ActionResult, ...)
  backend       - the node <-> core seam (PlanRequest, PlanBackend protocol)
  vocabulary    - the robot's action vocabulary (YAML, validated; config/actions.yaml is the default)
  schema_check  - our rules for an action's parameters schema (bounded, closed, supported keywords)
  constraint    - llguidance grammar over the vocabulary, applied per token in the engine's loop
  parse         - generated token ids -> calls / reply / question, or a typed error
  conversation  - the conversation history (Exchange, HistoryPolicy, Conversation) and its rules
  planner       - Planner: the real PlanBackend (engine + tokenizer + vocabulary + a Conversation)
"""
