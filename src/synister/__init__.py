"""synister: neurotransmitter classification of Drosophila synapses from 3D electron microscopy."""

__version__ = "0.1.0"
