//! The matrix product under whisper.cpp's BLAS backend: `cblas_sgemm` on the matrixmultiply
//! crate, so Whisper's encoder gets fast f32 kernels picked at run time without a system BLAS.
//!
//! whisper.cpp's own CPU kernels are compiled for one instruction set (AVX2 in a portable
//! build), and its quantized and f16 products are slower than a good f32 GEMM on the
//! encoder's large matrices. ggml's BLAS backend hands those products (both sides
//! contiguous, every dimension at least 32: the encoder's weights and half its attention)
//! to `cblas_sgemm`, converting quantized or f16 weights to f32 first. The functions here
//! are that interface. `stages/blas/` and `.cargo/config.toml` make ggml-blas build and link
//! against them instead of OpenBLAS (see doc/models.md, "Matrix kernels").
//!
//! ggml calls [`openblas_set_num_threads`] with the decoder's thread count before its
//! products, from the thread that then calls [`cblas_sgemm`]; the count is kept per thread,
//! so two decoder states working at once (`parts`) each keep their own.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;

/// Rows of the result below which a product is not split between threads.
const MIN_ROWS_PER_THREAD: usize = 64;

thread_local! {
    static THREADS: Cell<usize> = const { Cell::new(1) };
}

static PRODUCTS: AtomicU64 = AtomicU64::new(0);

/// How many products whisper.cpp has handed to [`cblas_sgemm`] in this process: a test
/// checks that the encoder really goes through it.
pub fn products() -> u64 {
    PRODUCTS.load(Ordering::Relaxed)
}

/// OpenBLAS's thread setting, as ggml-blas calls it: the threads the next products of this
/// thread may use.
#[unsafe(no_mangle)]
pub extern "C" fn openblas_set_num_threads(n: i32) {
    THREADS.with(|t| t.set(n.max(1) as usize));
}

/// `C = alpha * op(A) * op(B) + beta * C` for row-major f32 matrices: `op(A)` is m x k,
/// `op(B)` k x n, C m x n with row stride `ldc`. Large products are split by rows of C
/// between the threads last set by [`openblas_set_num_threads`].
///
/// # Safety
///
/// The CBLAS contract: `a`, `b` and `c` point to matrices of the given shapes and leading
/// dimensions, `c` does not overlap `a` or `b`, and nothing else writes them during the call.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cblas_sgemm(
    order: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
) {
    PRODUCTS.fetch_add(1, Ordering::Relaxed);
    if order != ROW_MAJOR {
        // ggml-blas only ever asks for row-major products; anything else is a broken build.
        eprintln!("vsum: cblas_sgemm called with a column-major layout, which it does not support");
        std::process::abort();
    }
    let (m, n, k) = (m.max(0) as usize, n.max(0) as usize, k.max(0) as usize);
    if m == 0 || n == 0 {
        return;
    }
    // Row and column strides of op(A) and op(B).
    let (rsa, csa) = if trans_a == NO_TRANS {
        (lda as isize, 1)
    } else {
        (1, lda as isize)
    };
    let (rsb, csb) = if trans_b == NO_TRANS {
        (ldb as isize, 1)
    } else {
        (1, ldb as isize)
    };
    // The pointers travel as addresses, so that the threads may share them: each thread
    // reads A and B and writes only its own rows of C.
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let product = |rows: std::ops::Range<usize>| {
        let start = rows.start as isize;
        // SAFETY: rows lies inside 0..m, so the offsets stay inside A and C as the caller
        // guarantees them; threads get disjoint rows of C.
        unsafe {
            matrixmultiply::sgemm(
                rows.len(),
                k,
                n,
                alpha,
                (a as *const f32).offset(start * rsa),
                rsa,
                csa,
                b as *const f32,
                rsb,
                csb,
                beta,
                (c as *mut f32).offset(start * ldc as isize),
                ldc as isize,
                1,
            )
        }
    };
    let threads = THREADS.with(Cell::get).min(m / MIN_ROWS_PER_THREAD).max(1);
    if threads == 1 {
        product(0..m);
        return;
    }
    std::thread::scope(|s| {
        let product = &product;
        for t in 1..threads {
            s.spawn(move || product(t * m / threads..(t + 1) * m / threads));
        }
        product(0..m / threads);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop, as the reference.
    fn naive(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn products_match_the_plain_loop_in_every_layout_and_thread_count() {
        let (m, n, k) = (300, 70, 45);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0)
            .collect();
        for threads in [1, 2, 3] {
            openblas_set_num_threads(threads);
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let want = naive(ta, tb, m, n, k, &a, &b);
                // C starts as ones, beta 0.5: the old values count half.
                let mut c = vec![1.0f32; m * n];
                let lda = if ta { m } else { k };
                let ldb = if tb { k } else { n };
                let t = |x: bool| if x { 112 } else { NO_TRANS };
                // SAFETY: the slices have exactly the shapes passed.
                unsafe {
                    cblas_sgemm(
                        ROW_MAJOR,
                        t(ta),
                        t(tb),
                        m as i32,
                        n as i32,
                        k as i32,
                        2.0,
                        a.as_ptr(),
                        lda as i32,
                        b.as_ptr(),
                        ldb as i32,
                        0.5,
                        c.as_mut_ptr(),
                        n as i32,
                    )
                };
                for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                    let want = 2.0 * want + 0.5;
                    assert!(
                        (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                        "threads {threads}, trans ({ta}, {tb}), element {i}: {got} != {want}"
                    );
                }
            }
        }
        openblas_set_num_threads(1);
        assert!(products() >= 12);
    }
}
