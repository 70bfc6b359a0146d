"""dsc: a declarative dataset-spec compiler for fine-tuning LLM agents."""
__version__ = "0.1.0"

# Import paths from before the `src/dsc/` layout (plugins written against them keep working).
from dsc import _moved

_moved.install()
