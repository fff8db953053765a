"""The engine's lifecycle around the vLLM adapter (operators/engine.py): the engine actor, warm
engines that outlive a run, whether an engine compiles, the compile cache, and the facts
earlier runs measured about their engines."""
