//! Noise links (in progress).
