"""streamrnn: a streaming speech and text recognizer built on stateful recurrent models."""
__version__ = "0.1.0"
