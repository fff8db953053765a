"""The engine's lifecycle around the vLLM adapter (operators/engine.py): the engine actor
(`actor`: EngineActor; its setup in `start`, what a run asks and binds in `binding`, its units
in hand in `in_hand`, what it watches in `watch`, a start failure the driver catches in
`failure`), warm engines that outlive a run (`host`, `warm_pool`, `warm_feed`), whether an
engine compiles, the compile cache, and the facts earlier runs measured about their engines."""
