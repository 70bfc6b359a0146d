"""dsc: a declarative dataset-spec compiler for fine-tuning LLM agents."""
__version__ = "0.1.0"
