//! The queue engine.
