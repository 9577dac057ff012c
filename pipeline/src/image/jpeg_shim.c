/* Window decoding of JPEG images with libjpeg-turbo's libjpeg API (Debian libjpeg62-turbo-dev),
 * for dspnet-pipeline's loader (src/image/jpeg.rs holds the Rust side and the documentation).
 *
 * libjpeg reports fatal errors through error_exit, which must not return: it longjmps back to
 * dspnet_jpeg_decode_window, all within this file (no Rust frame lies between setjmp and
 * longjmp). Warnings (corrupt data the library worked around) are counted, not printed.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

struct dspnet_err {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  int warnings;
  char msg[JMSG_LENGTH_MAX];
};

static void dspnet_error_exit(j_common_ptr cinfo) {
  struct dspnet_err *e = (struct dspnet_err *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jump, 1);
}

static void dspnet_emit_message(j_common_ptr cinfo, int level) {
  struct dspnet_err *e = (struct dspnet_err *)cinfo->err;
  if (level < 0) {
    if (e->warnings == 0) (*cinfo->err->format_message)(cinfo, e->msg);
    e->warnings++;
  }
}

static void copy_msg(char *dst, size_t cap, const char *src) {
  if (cap == 0) return;
  strncpy(dst, src, cap - 1);
  dst[cap - 1] = '\0';
}

/* The decoding proper, run under the setjmp of dspnet_jpeg_decode_window. */
static int decode_impl(struct jpeg_decompress_struct *cinfo, struct dspnet_err *err,
                       const unsigned char *buf, unsigned long len, int gray, uint32_t x0,
                       uint32_t y0, uint32_t w0, uint32_t h0, unsigned char *out, size_t out_cap,
                       uint32_t *full_w, uint32_t *full_h, uint32_t *out_x, uint32_t *out_w,
                       int *warnings, char *msg, size_t msg_cap) {
  jpeg_mem_src(cinfo, buf, len);
  jpeg_read_header(cinfo, TRUE);
  cinfo->out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(cinfo);
  const uint32_t W = cinfo->output_width, H = cinfo->output_height;
  const uint32_t ch = (uint32_t)cinfo->output_components;
  *full_w = W;
  *full_h = H;
  if (w0 == 0 || h0 == 0) {
    x0 = 0;
    y0 = 0;
    w0 = W;
    h0 = H;
  }
  if ((uint64_t)x0 + w0 > W || (uint64_t)y0 + h0 > H || ch != (gray ? 1u : 3u)) {
    snprintf(msg, msg_cap, "window %ux%u at (%u, %u) outside the %ux%u image (or %u channels)", w0,
             h0, x0, y0, W, H, ch);
    jpeg_abort_decompress(cinfo);
    return 2;
  }
  JDIMENSION xo = x0, wo = w0;
  if (x0 > 0 || w0 < W) jpeg_crop_scanline(cinfo, &xo, &wo);
  const size_t stride = (size_t)wo * ch;
  if (stride * h0 > out_cap) {
    snprintf(msg, msg_cap, "window needs %zu bytes, buffer holds %zu", stride * h0, out_cap);
    jpeg_abort_decompress(cinfo);
    return 2;
  }
  if (y0 > 0) jpeg_skip_scanlines(cinfo, y0);
  while (cinfo->output_scanline < y0 + h0) {
    JSAMPROW rows[16];
    uint32_t r = cinfo->output_scanline - y0, n = y0 + h0 - cinfo->output_scanline;
    if (n > 16) n = 16;
    for (uint32_t i = 0; i < n; i++) rows[i] = out + (size_t)(r + i) * stride;
    if (jpeg_read_scanlines(cinfo, rows, n) == 0) break;
  }
  if (cinfo->output_scanline < y0 + h0) {
    snprintf(msg, msg_cap, "decoder stopped at row %u of %u", cinfo->output_scanline, y0 + h0);
    jpeg_abort_decompress(cinfo);
    return 1;
  }
  if (cinfo->output_scanline < H)
    jpeg_abort_decompress(cinfo);
  else
    jpeg_finish_decompress(cinfo);
  *out_x = xo;
  *out_w = wo;
  *warnings = err->warnings;
  if (err->warnings) copy_msg(msg, msg_cap, err->msg);
  return 0;
}

/* Decode rows [y0, y0 + h0) and (at least) columns [x0, x0 + w0) of the full-scale image to
 * 8-bit RGB (gray = 0) or luma (gray = 1). w0 == 0 or h0 == 0 means the whole image. libjpeg
 * widens the columns to iMCU boundaries: the decoded columns are [*out_x, *out_x + *out_w), rows
 * are stored contiguously (stride *out_w * channels) in out (capacity out_cap bytes; a full-width
 * window always fits in full_width * h0 * channels).
 * Returns 0 on success, 1 on a libjpeg error, 2 when the window does not fit the image or out;
 * msg then holds one line. *warnings counts corrupt-data warnings (msg holds the first). */
int dspnet_jpeg_decode_window(const unsigned char *buf, unsigned long len, int gray, uint32_t x0,
                              uint32_t y0, uint32_t w0, uint32_t h0, unsigned char *out,
                              size_t out_cap, uint32_t *full_w, uint32_t *full_h,
                              uint32_t *out_x, uint32_t *out_w, int *warnings, char *msg,
                              size_t msg_cap) {
  struct jpeg_decompress_struct cinfo;
  struct dspnet_err err;
  memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = dspnet_error_exit;
  err.pub.emit_message = dspnet_emit_message;
  err.warnings = 0;
  err.msg[0] = '\0';
  *warnings = 0;
  if (setjmp(err.jump)) {
    copy_msg(msg, msg_cap, err.msg);
    *warnings = err.warnings;
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  int rc = decode_impl(&cinfo, &err, buf, len, gray, x0, y0, w0, h0, out, out_cap, full_w, full_h,
                       out_x, out_w, warnings, msg, msg_cap);
  jpeg_destroy_decompress(&cinfo);
  return rc;
}
