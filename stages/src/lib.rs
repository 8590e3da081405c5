//! vsum's stage kinds. The engine knows none of them by name: the binary builds a
//! registry from here, one line per kind (media kinds: [`media::register_media`]).

pub mod media;
