"""The parts of the unit protocol (pipelines/unit/protocol.py runs its steps): who runs a unit
(context), what became of it (outcome), its commit (commits) and its requests' keys and shared
answers (requests). Ray-free, as the protocol is."""
