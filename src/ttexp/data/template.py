"""The prompt template that turns a prompt into the text a model sees before its response."""

DEFAULT_TEMPLATE = "### Question:\n{prompt}\n\n### Answer:\n"


def format_prompt(template: str, prompt: str) -> str:
    """``template`` with ``{prompt}`` replaced (plain replacement: braces elsewhere are kept)."""
    return template.replace("{prompt}", prompt)
