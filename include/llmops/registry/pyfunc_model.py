"""The registered model: an MLflow pyfunc that loads the base model with the LoRA adapter.

Serving code (``mlflow models serve``, ``mlflow.pyfunc.load_model("models:/<name>@champion")``)
calls ``predict`` with a DataFrame of prompts (column ``prompt``) or a list of strings, and gets
one generated answer per prompt.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class AdapterTextGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        base = AutoModelForCausalLM.from_pretrained(context.artifacts["base_model"], dtype=dtype)
        self.model = PeftModel.from_pretrained(base, context.artifacts["adapter"]).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["adapter"])
        config = context.model_config or {}
        self.max_new_tokens = int(config.get("max_new_tokens", 64))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            prompts = [str(p) for p in model_input["prompt"].tolist()]
        elif isinstance(model_input, str):
            prompts = [model_input]
        else:
            prompts = [str(p) for p in model_input]
        max_new_tokens = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        answers = []
        for prompt in prompts:
            encoded = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            with self._torch.no_grad():
                output = self.model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new_tokens = output[0, encoded["input_ids"].shape[1] :]
            answers.append(self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
        return answers
