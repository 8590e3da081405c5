# vsum: whisper.cpp's BLAS backend (ggml-blas) calls `cblas_sgemm`, which vsum itself
# provides (stages/src/speech/blas.rs, on the matrixmultiply crate). This module stands in
# for CMake's FindBLAS so that ggml-blas is built without a system BLAS: no library to
# link, and the declarations in this folder's cblas.h. `.cargo/config.toml` puts this
# folder on CMAKE_MODULE_PATH (whisper-rs-sys hands CMAKE_* variables to CMake).
set(BLAS_FOUND TRUE)
set(BLAS_LIBRARIES "")
set(BLAS_LINKER_FLAGS "")
