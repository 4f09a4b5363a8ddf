"""The prompt template of class-conditional use of text-to-image pipelines.

The paper (and Diffusion Classifier) turn a class name into the prompt ``"a photo of a {}."``;
the pipeline's own ``encode_prompt`` then embeds it (:func:`.pipelines.encode_prompts`).
"""

DEFAULT_TEMPLATE = "a photo of a {}."


def check_template(template: str) -> str:
    """``template`` if it has exactly one ``{}`` slot for the class name, else a one-line error."""
    from ..errors import ConfigError

    try:
        filled = template.format("x")
    except (IndexError, KeyError, ValueError) as exc:
        raise ConfigError(f"--prompt-template {template!r} is not allowed ({exc}); allowed: text with one {{}} for the class name") from None
    if "{}" not in template or filled == template:
        raise ConfigError(f"--prompt-template {template!r} has no {{}} slot; allowed: text with one {{}} for the class name")
    return template
