"""Ministral tokenizer (tekken) and the exact V3 prompt format. Never imports rclpy.

API (for the engine, planner, constrained decoder and demo-model helpers):
``tekken.convert_tekken(tekken_json, out_tokenizer_json)`` writes a Hugging Face ``tokenizers``
tokenizer.json from Mistral's tekken.json (1.2-2.7 s for the 131072-token V3 file here; no cache), and
``tekken.bundled_tekken_path()`` is mistral-common's ``tekken_240718.json`` (Ministral-8B-Instruct-2410;
mistral-common is needed only for that file and for tests). ``tokenizer.MinistralTokenizer`` loads
one: ``from_file(tokenizer.json)``, ``from_tekken(tekken.json)`` (in memory), ``from_model_dir(dir)``
(tokenizer.json, else tekken.json). It has ``.hf`` (the ``tokenizers.Tokenizer``; loading takes 0.5-1 s),
``encode(text) -> list[int]`` (no BOS/EOS and never a control token: text reading "[INST]" stays
text, as in mistral-common), ``decode(ids, skip_control=True)``, ``vocab_size`` (131072), ``bos_id`` (1),
``eos_id`` (2), ``control_id('[TOOL_CALLS]')`` (9; KeyError naming the token if absent),
``control_tokens`` (name -> id), ``is_control(id)``, ``token_bytes(id)`` and ``stream_decoder()``, whose
``push(id) -> str`` never emits half a UTF-8 character (``flush()`` at the end). Control ids of the
V3 tekken: <unk>0 <s>1 </s>2 [INST]3 [/INST]4 [AVAILABLE_TOOLS]5 [/AVAILABLE_TOOLS]6 [TOOL_RESULTS]7
[/TOOL_RESULTS]8 [TOOL_CALLS]9; ids 20-999 are unused ``<SPECIAL_n>`` slots, regular tokens start at
1000.

``prompt`` renders V3 chats token-for-token like mistral-common's ``encode_chat_completion`` (its
docstring states every rule). Types (frozen dataclasses, validated on construction, errors are
``ChatFormatError``): ``ChatMessage(role, content='', tool_calls=(), tool_call_id=None)`` with roles
system/user/assistant/tool, ``ToolCall(name, arguments={}, id=generate_call_id())`` (arguments are the
decoded JSON value; ids are 9 letters/digits), ``ToolSpec(name, description='', parameters={})``
(JSON Schema), ``ChatRequest(messages, tools=(), continue_final=False)``; ``openai_request.from_openai_request(dict)``
parses an OpenAI-style request into one. ``render_prompt(request, tokenizer)`` / ``render_chat(messages,
tokenizer, tools)`` give the ids after which generation starts (they end with ``[/INST]`` or
``[/TOOL_RESULTS]``); the tokenizer is any object with ``encode`` and ``control_id``. For the decoder:
an assistant tool-call turn is ``[TOOL_CALLS]`` + ``tool_calls_json(calls)`` + ``</s>``, i.e.
``[{"name": "navigate_to", "arguments": {"place": "kitchen"}, "id": "a1B2c3D4e"}]`` (``json.dumps``
separators, ``ensure_ascii=False``); ``render_assistant_turn(message, tokenizer)`` gives those ids.
Tools and system prompt ride with the LAST user message, so only single-turn prompts share a constant
head, ``<s>[AVAILABLE_TOOLS]<tools_json(tools)>[/AVAILABLE_TOOLS][INST]``; reuse KV entries by
``common_prefix_length``.

llguidance reads the same tokenizer: ``llguidance.LLTokenizer(tok.hf.to_str(), n_vocab=tok.vocab_size,
eos_token=tok.eos_id)`` (1-4.5 s to build here; ``llguidance.hf.from_tokenizer`` wants a transformers
object). It treats all 1000 control ids as special, and its ``tokenize_str`` turns text such as
"[INST]" into control ids, unlike ``MinistralTokenizer.encode``: tokenize prompts with ours.
"""
