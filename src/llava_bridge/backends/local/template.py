"""Our Llama-3 chat template with `<image>`, for processors that ship none.

It writes what `prompts.render_llama3` writes, after `bos_token`: the Llama-3
headers, and `<image>\\n` at the start of a turn for each image part in it. The
backend renders prompts with `render_llama3`; this template is set on the
processor so that `processor.apply_chat_template(...)` gives the same prompt.
"""

from __future__ import annotations

__all__ = ["LLAMA3_IMAGE_CHAT_TEMPLATE"]

LLAMA3_IMAGE_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)
