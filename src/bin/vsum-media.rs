//! `vsum-media`: the media stages' helper. It links FFmpeg so that `vsum` does not;
//! `vsum` starts it for each media job (see `vsum_stages::media::helper`).

fn main() -> std::process::ExitCode {
    vsum_stages::media::helper::helper_main()
}
