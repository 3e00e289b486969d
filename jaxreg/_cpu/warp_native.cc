// Batched bilinear affine warp for XLA:CPU, the CPU lowering of the warp primitive in
// jaxreg/_cpu/warp.py (called for jaxreg/augment/_warp.py's apply_batch).
//
// XLA:CPU runs gathers as scalar loops with per-element index arithmetic; this kernel does the
// same arithmetic as `_warp.apply_batch_xla` (fold the coordinates by the border rule, clamp the
// 2x2 window, blend, fill where the map leaves the image) in one pass over the output, with the
// coordinates of an output row computed in a vectorisable loop and each pixel's four taps read
// as contiguous channel vectors. Built on first use by jaxreg/_cpu/native.py against the
// XLA FFI headers that ship with the installed jaxlib. Measurements behind the choices below:
// benchmarks/results/cpu_seam.md.
//
// Operands: images (B, Hp, Wp, C) f32 (already padded to >= 2x2), maps (B, 6) f32 holding the
// first two rows of each 3x3 output-to-input map (y row, then x row), fill (C,) f32.
// Result: (B, Ho, Wo, C) f32. Attributes: mode (0 constant, 1 edge, 2 reflect, 3 symmetric,
// 4 wrap), in_h / in_w (image size before padding, used by the border rule), threads, and
// huge_pages (1: advise transparent huge pages for a large output, see AdviseHugePages).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Mode : int { kConstant = 0, kEdge = 1, kReflect = 2, kSymmetric = 3, kWrap = 4 };

// Outputs from this size on get the page-fault treatment of PopulateForWrite/AdviseHugePages.
constexpr size_t kLargeOutput = size_t{8} << 20;
void PopulateForWrite(float* data, size_t bytes);

struct Job {
  const float* images;
  const float* maps;
  const float* fill;
  float* out;
  int64_t batch, hp, wp, c, ho, wo, in_h, in_w;
};

// jnp.mod for floats: the remainder takes the sign of the divisor.
inline float FloorMod(float x, float y) {
  float r = std::fmod(x, y);
  if (r != 0.0f && ((r < 0.0f) != (y < 0.0f))) r += y;
  return r;
}

// `_warp._fold` (non-exact branch) for the periodic rules, one coordinate along an axis of n
// pixels. The clamp to [0, n - 1] and the constant rule's validity test follow in ComputeRow.
template <int MODE>
inline float Fold(float t, int64_t n) {
  const float hi = static_cast<float>(n - 1);
  if (n > 1) {
    if (MODE == kReflect) {
      const float p = 2.0f * hi;
      t = FloorMod(t, p);
      t = t > hi ? p - t : t;
    } else if (MODE == kSymmetric) {
      const float nn = static_cast<float>(n);
      t = FloorMod(t + 0.5f, 2.0f * nn);
      t = (t > nn ? 2.0f * nn - t : t) - 0.5f;
    } else if (MODE == kWrap) {
      t = FloorMod(t + 0.5f, static_cast<float>(n)) - 0.5f;
    }
  }
  return t;
}

// Per output pixel of one row: offset of the top-left tap (in floats, within its image),
// second-tap weights, and whether the pixel keeps its value (else the constant fill).
struct RowTaps {
  std::vector<int32_t> offset, valid;
  std::vector<float> fy, fx;
  explicit RowTaps(int64_t wo) : offset(wo), valid(wo), fy(wo), fx(wo) {}
};

// Written branch-free over 32-bit lanes so that the compiler vectorises it for the clamped
// rules (constant, edge).
template <int MODE>
void ComputeRow(const Job& j, const float* m, int64_t i, RowTaps* taps) {
  const float fi = static_cast<float>(i);
  const float y_row = m[0] * fi, x_row = m[3] * fi;
  const float my = m[1], cy = m[2], mx = m[4], cx = m[5];
  const float y_hi = static_cast<float>(j.in_h - 1), x_hi = static_cast<float>(j.in_w - 1);
  const int32_t y_max = static_cast<int32_t>(j.hp - 2), x_max = static_cast<int32_t>(j.wp - 2);
  const int32_t wp = static_cast<int32_t>(j.wp), c = static_cast<int32_t>(j.c);
  const int32_t wo = static_cast<int32_t>(j.wo);
  const int64_t in_h = j.in_h, in_w = j.in_w;
  int32_t* __restrict offset = taps->offset.data();
  int32_t* __restrict valid = taps->valid.data();
  float* __restrict fy = taps->fy.data();
  float* __restrict fx = taps->fx.data();
  for (int32_t k = 0; k < wo; ++k) {
    const float fk = static_cast<float>(k);
    // Same arithmetic as `_warp._coords`: (m0 * y + m1 * x) + m2, no fused multiply-add
    // (built with -ffp-contract=off).
    float y = Fold<MODE>((y_row + my * fk) + cy, in_h);
    float x = Fold<MODE>((x_row + mx * fk) + cx, in_w);
    // NaN coordinates (a degenerate map) compare false: invalid, read at 0.
    valid[k] = MODE != kConstant ||
               ((y >= -1e-3f) & (y <= y_hi + 1e-3f) & (x >= -1e-3f) & (x <= x_hi + 1e-3f));
    y = y > 0.0f ? y : 0.0f;
    y = y < y_hi ? y : y_hi;
    x = x > 0.0f ? x : 0.0f;
    x = x < x_hi ? x : x_hi;
    // y, x >= 0 here, so truncation is floor.
    int32_t iy = static_cast<int32_t>(y), ix = static_cast<int32_t>(x);
    iy = iy < y_max ? iy : y_max;
    ix = ix < x_max ? ix : x_max;
    fy[k] = y - static_cast<float>(iy);
    fx[k] = x - static_cast<float>(ix);
    offset[k] = (iy * wp + ix) * c;
  }
}

// Bilinear blend of one pixel, `_warp._blend`'s order of operations, scalar.
inline void BlendScalar(const float* t, const float* b, int64_t c, float fy, float fx,
                        int32_t valid, const float* fill, float* o) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const float top = t[ch] + fx * (t[c + ch] - t[ch]);
    const float bot = b[ch] + fx * (b[c + ch] - b[ch]);
    const float v = top + fy * (bot - top);
    o[ch] = valid ? v : fill[ch];
  }
}

template <int C>
void BlendRow(const Job& j, const float* img, const RowTaps& taps, int64_t end, float* o) {
  const int64_t c = C > 0 ? C : j.c;
  const int64_t down = j.wp * c;
#if defined(__SSE2__)
  if (C == 3) {
    // Four-lane loads of each tap (3 channels + 1 float of the next pixel); the 4th lane's
    // result is overwritten by the next pixel's store, so the row's last pixel and taps that
    // end at the buffer's last float take the scalar path.
    const __m128 fill_v = _mm_setr_ps(j.fill[0], j.fill[1], j.fill[2], 0.0f);
    for (int64_t k = 0; k < j.wo; ++k) {
      const float* t = img + taps.offset[k];
      const float* b = t + down;
      if (k == j.wo - 1 || b + 7 > img + end) {
        BlendScalar(t, b, c, taps.fy[k], taps.fx[k], taps.valid[k], j.fill, o + 3 * k);
        continue;
      }
      const __m128 fx = _mm_set1_ps(taps.fx[k]), fy = _mm_set1_ps(taps.fy[k]);
      const __m128 t0 = _mm_loadu_ps(t), t1 = _mm_loadu_ps(t + 3);
      const __m128 b0 = _mm_loadu_ps(b), b1 = _mm_loadu_ps(b + 3);
      const __m128 top = _mm_add_ps(t0, _mm_mul_ps(fx, _mm_sub_ps(t1, t0)));
      const __m128 bot = _mm_add_ps(b0, _mm_mul_ps(fx, _mm_sub_ps(b1, b0)));
      const __m128 v = _mm_add_ps(top, _mm_mul_ps(fy, _mm_sub_ps(bot, top)));
      const __m128 keep = _mm_castsi128_ps(_mm_set1_epi32(taps.valid[k] ? -1 : 0));
      _mm_storeu_ps(o + 3 * k, _mm_or_ps(_mm_and_ps(keep, v), _mm_andnot_ps(keep, fill_v)));
    }
    return;
  }
#endif
  for (int64_t k = 0; k < j.wo; ++k) {
    const float* t = img + taps.offset[k];
    BlendScalar(t, t + down, c, taps.fy[k], taps.fx[k], taps.valid[k], j.fill, o + c * k);
  }
}

// Reads, in address order, the part of one source image that output rows [i0, i1) sample
// (the bounding box of their source coordinates, or the whole image for the periodic border
// rules), so that the warp finds it in cache. A rotated map walks the source diagonally, which
// the hardware prefetcher does not follow: without this pass most first reads of a source line
// wait for DRAM.
template <int MODE>
void WarmSource(const Job& j, const float* m, const float* img, int64_t i0, int64_t i1) {
  // Rows that stay within ~2 source rows read the source in address order already.
  if (std::fabs(m[1]) * static_cast<float>(j.wo) < 2.0f) return;
  int64_t r0 = 0, r1 = j.hp - 1, c0 = 0, c1 = j.wp - 1;
  if (MODE == kConstant || MODE == kEdge) {  // clamped rules read inside the box
    float y_lo = 1e30f, y_hi = -1e30f, x_lo = 1e30f, x_hi = -1e30f;
    for (const int64_t i : {i0, i1 - 1}) {
      for (const int64_t k : {int64_t{0}, j.wo - 1}) {
        const float fi = static_cast<float>(i), fk = static_cast<float>(k);
        const float y = m[0] * fi + m[1] * fk + m[2], x = m[3] * fi + m[4] * fk + m[5];
        y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
        x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
      }
    }
    if (!(y_lo <= y_hi && x_lo <= x_hi)) return;  // NaN map
    const auto clamp_to = [](float v, int64_t hi) {
      return std::clamp<int64_t>(static_cast<int64_t>(std::clamp(v, -1.0f, 1e9f)), 0, hi);
    };
    r0 = clamp_to(y_lo, j.hp - 1), r1 = clamp_to(y_hi + 2.0f, j.hp - 1);
    c0 = clamp_to(x_lo, j.wp - 1), c1 = clamp_to(x_hi + 2.0f, j.wp - 1);
  }
  const int64_t step = 64 / sizeof(float);  // one read per 64-byte line
  float acc = 0.0f;
  for (int64_t r = r0; r <= r1; ++r) {
    const float* p = img + (r * j.wp + c0) * j.c;
    const float* e = img + (r * j.wp + c1 + 1) * j.c;
    for (; p < e; p += step) acc += *p;
  }
  volatile float sink = acc;  // keeps the reads
  (void)sink;
}

template <int MODE, int C>
void Rows(const Job& j, int64_t r0, int64_t r1) {
  RowTaps taps(j.wo);
  const int64_t image_size = j.hp * j.wp * j.c;
  const int64_t end = j.batch * image_size;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / j.ho, i = r % j.ho;
    if (r == r0 || i == 0) {
      WarmSource<MODE>(j, j.maps + 6 * b, j.images + b * image_size, i,
                       std::min(j.ho, i + (r1 - r)));
    }
    ComputeRow<MODE>(j, j.maps + 6 * b, i, &taps);
    const float* img = j.images + b * image_size;
    BlendRow<C>(j, img, taps, end - b * image_size, j.out + r * j.wo * j.c);
  }
}

template <int MODE>
void RowsForChannels(const Job& j, int64_t r0, int64_t r1) {
  if (j.c == 3) {
    Rows<MODE, 3>(j, r0, r1);
  } else if (j.c == 1) {
    Rows<MODE, 1>(j, r0, r1);
  } else {
    Rows<MODE, 0>(j, r0, r1);
  }
}

void RowsForMode(int mode, const Job& j, int64_t r0, int64_t r1) {
  const size_t row_bytes = static_cast<size_t>(j.wo * j.c) * sizeof(float);
  if (row_bytes * static_cast<size_t>(j.batch * j.ho) >= kLargeOutput) {
    PopulateForWrite(j.out + r0 * j.wo * j.c, row_bytes * static_cast<size_t>(r1 - r0));
  }
  switch (mode) {
    case kConstant: RowsForChannels<kConstant>(j, r0, r1); break;
    case kEdge: RowsForChannels<kEdge>(j, r0, r1); break;
    case kReflect: RowsForChannels<kReflect>(j, r0, r1); break;
    case kSymmetric: RowsForChannels<kSymmetric>(j, r0, r1); break;
    default: RowsForChannels<kWrap>(j, r0, r1); break;
  }
}

// A fresh output buffer of tens of MB is a new mmap whose 4 KiB pages fault in one by one as
// the kernel writes them, which can cost as much as the warp itself. Each thread first asks
// the kernel to map its part of the output in one call (MADV_POPULATE_WRITE, Linux >= 5.14;
// ignored elsewhere) instead of one page fault per 4 KiB page as the rows are written.
void PopulateForWrite(float* data, size_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  constexpr uintptr_t kPage = 4096;
  uintptr_t lo = reinterpret_cast<uintptr_t>(data), hi = lo + bytes;
  lo = (lo + kPage - 1) & ~(kPage - 1);
  hi &= ~(kPage - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);  // a hint
#else
  (void)data;
  (void)bytes;
#endif
}

// Opt-in (JAXREG_HUGE_PAGES=1): advise transparent huge pages for the whole 2 MiB pages
// inside a large output, which then fault in 2 MiB at a time (where THP is "madvise" or
// "always"; a no-op where it is "never"); the advice ends when the allocator unmaps the range.
// Not the default: on a VM that returns freed guest memory to its host (free page reporting),
// a huge page that lands on returned memory is slow to fault, and whole runs got slower.
void AdviseHugePages(float* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  uintptr_t lo = reinterpret_cast<uintptr_t>(data);
  uintptr_t hi = lo + bytes;
  lo = (lo + kHuge - 1) & ~(kHuge - 1);
  hi &= ~(kHuge - 1);
  if (hi <= lo) return;
  // A buffer whose pages are already mapped (memory the allocator reused) has no faults to
  // save; advising it again only splits and merges the allocator's mappings, which is slow.
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(lo), 4096, &resident) != 0 || (resident & 1)) return;
  madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only; errors ignored
#else
  (void)data;
  (void)bytes;
#endif
}

ffi::Error WarpImpl(ffi::Buffer<ffi::F32> images, ffi::Buffer<ffi::F32> maps,
                    ffi::Buffer<ffi::F32> fill, ffi::ResultBuffer<ffi::F32> out, int64_t mode,
                    int64_t in_h, int64_t in_w, int64_t threads, int64_t huge_pages) {
  const auto d = images.dimensions();
  const auto od = out->dimensions();
  if (d.size() != 4 || od.size() != 4 || od[0] != d[0] || od[3] != d[3]) {
    return ffi::Error::InvalidArgument("jaxreg warp: images and result must be (B, H, W, C)");
  }
  if (d[1] < 2 || d[2] < 2 || in_h < 1 || in_w < 1 || in_h > d[1] || in_w > d[2]) {
    return ffi::Error::InvalidArgument("jaxreg warp: images must be padded to at least 2x2");
  }
  if (maps.element_count() != 6 * d[0] || fill.element_count() != d[3]) {
    return ffi::Error::InvalidArgument("jaxreg warp: maps must be (B, 6) and fill (C,)");
  }
  if (d[1] * d[2] * d[3] > (int64_t{1} << 31) - 1 || od[2] > (int64_t{1} << 31) - 1) {
    return ffi::Error::InvalidArgument("jaxreg warp: one image must hold < 2^31 values");
  }
  if (mode < kConstant || mode > kWrap) {
    return ffi::Error::InvalidArgument("jaxreg warp: mode must be in 0..4");
  }
  const Job job{images.typed_data(), maps.typed_data(), fill.typed_data(), out->typed_data(),
                d[0], d[1], d[2], d[3], od[1], od[2], in_h, in_w};
  const size_t out_bytes = out->element_count() * sizeof(float);
  if (huge_pages && out_bytes >= kLargeOutput) AdviseHugePages(job.out, out_bytes);
  const int64_t rows = job.batch * job.ho;
  // Threads only pay off for large outputs (at least 64k pixels each).
  const int64_t by_size = std::max<int64_t>(1, rows * job.wo / 65536);
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>({threads, by_size, rows}));
  // Contiguous row ranges, one per thread; the calling thread takes the first. A thread that
  // cannot be started leaves its range to the calling thread.
  std::vector<std::thread> pool;
  std::vector<std::pair<int64_t, int64_t>> inline_ranges = {{0, rows / n}};
  for (int64_t k = 1; k < n; ++k) {
    const int64_t lo = rows * k / n, hi = rows * (k + 1) / n;
    try {
      pool.emplace_back(RowsForMode, static_cast<int>(mode), std::cref(job), lo, hi);
    } catch (const std::system_error&) {
      inline_ranges.emplace_back(lo, hi);
    }
  }
  for (const auto& [lo, hi] : inline_ranges) RowsForMode(static_cast<int>(mode), job, lo, hi);
  for (auto& t : pool) t.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxregWarpBilinear, WarpImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // images
                                  .Arg<ffi::Buffer<ffi::F32>>()  // maps
                                  .Arg<ffi::Buffer<ffi::F32>>()  // fill
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("in_h")
                                  .Attr<int64_t>("in_w")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("huge_pages"));
