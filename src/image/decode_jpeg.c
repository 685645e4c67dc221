/* SPDX-License-Identifier: MIT */
/*
 * decode_jpeg.c: JPEG through libjpeg-turbo, with Pillow 9.4's settings so
 * that the pixels are the ones the CLIP reference saw.
 *
 * - libjpeg's defaults are Pillow's: integer slow DCT (JDCT_ISLOW), fancy
 *   upsampling, no DCT scaling. We leave them alone in image__decode_jpeg.
 *   image__decode_jpeg_scaled (ingestion's bounded path, image_prepare.c)
 *   asks for the smallest DCT scale M/8 that keeps a given size: much
 *   faster for big photos, not byte-exact. A progressive file on that path
 *   is read only as far as its scans are needed (progressive_enough):
 *   until every coefficient the scaled IDCT reads (at 1/8 the DC alone)
 *   lacks at most its last bit, within the same PSNR bound. The
 *   scans after that are never entropy-decoded, nor checked: a file cut
 *   short after them still decodes on that path.
 * - Modes as Pillow: 1 component -> L, 3 -> RGB (libjpeg converts YCbCr),
 *   4 (CMYK or YCCK) -> CMYK. Pillow assumes Adobe's inverted CMYK
 *   (JpegImagePlugin: rawmode "CMYK;I"), so we store 255 - v.
 * - Errors: libjpeg's error_exit would call exit(); ours longjmps back with
 *   the library's message. Warnings (corrupt entropy data, extraneous bytes)
 *   are ignored, as Pillow does.
 * - Truncation: Pillow raises "image file is truncated" when the decoder
 *   wants more data than the file has (LOAD_TRUNCATED_IMAGES is False by
 *   default). Our in-memory source errors at that point ("truncated JPEG")
 *   instead of padding with a fake EOI like libjpeg's stdio source. We stop
 *   after the last scanline (no jpeg_finish_decompress), so a file that only
 *   lacks its EOI marker still decodes, as in Pillow.
 * - Progressive files with absurd numbers of scans are a known CPU sink for
 *   libjpeg; a progress monitor stops after MAX_SCANS.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "image_int.h"

#define MAX_SCANS 1000

size_t image__jpeg_max_memory = IMAGE_JPEG_MAX_MEMORY;

struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    enum ims_status st;
    char msg[JMSG_LENGTH_MAX + 64];
};

struct jsrc {
    struct jpeg_source_mgr pub;
    const uint8_t *data;
    size_t n;
    struct jerr *jerr;
};

static void on_error_exit(j_common_ptr cinfo)
{
    struct jerr *e = (struct jerr *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    if (e->st == IMS_OK) {
        int code = cinfo->err->msg_code;
        e->st = code == JERR_OUT_OF_MEMORY   ? IMS_ERR_NOMEM
                : code == JERR_IMAGE_TOO_BIG ? IMS_ERR_TOO_LARGE
                /* past max_memory_to_use: libjpeg would need a backing store */
                : code == JERR_NO_BACKING_STORE ? IMS_ERR_TOO_LARGE
                                                : IMS_ERR_CORRUPT;
        if (code == JERR_NO_BACKING_STORE)
            snprintf(e->msg, sizeof(e->msg),
                     "JPEG needs more decoder memory than the limit of %zu MiB",
                     image__jpeg_max_memory >> 20);
        else
            snprintf(e->msg, sizeof(e->msg), "%s: %s",
                     e->st == IMS_ERR_CORRUPT ? "corrupt JPEG" : "JPEG", buf);
    }
    longjmp(e->jb, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level)
{
    (void)cinfo;
    (void)level; /* warnings and traces are ignored, like Pillow */
}

static void src_init(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

static boolean src_fill(j_decompress_ptr cinfo)
{
    struct jsrc *s = (struct jsrc *)cinfo->src;
    struct jerr *e = s->jerr;
    e->st = IMS_ERR_CORRUPT;
    if (cinfo->global_state >= 205 /* DSTATE_SCANNING and later */ && cinfo->output_height)
        snprintf(e->msg, sizeof(e->msg),
                 "truncated JPEG: data ends at byte %zu, after %u of %u rows", s->n,
                 cinfo->output_scanline, cinfo->output_height);
    else
        snprintf(e->msg, sizeof(e->msg), "truncated JPEG: data ends at byte %zu", s->n);
    longjmp(e->jb, 1);
    return FALSE;
}

static void src_skip(j_decompress_ptr cinfo, long n)
{
    struct jpeg_source_mgr *src = cinfo->src;
    if (n <= 0)
        return;
    if ((size_t)n > src->bytes_in_buffer) {
        /* skipping past the end: the data is truncated */
        src->next_input_byte += src->bytes_in_buffer;
        src->bytes_in_buffer = 0;
        src_fill(cinfo);
        return;
    }
    src->next_input_byte += n;
    src->bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

static void on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > MAX_SCANS) {
        struct jerr *e = (struct jerr *)cinfo->err;
        e->st = IMS_ERR_CORRUPT;
        snprintf(e->msg, sizeof(e->msg), "corrupt JPEG: more than %d progressive scans",
                 MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

/* Smallest libjpeg-turbo DCT scale M/8 (M = 1..8) whose output keeps its
 * shorter side >= min_short and its longer side >= min_long; 8 (no scaling)
 * when none is smaller. libjpeg rounds the output size up (jdiv_round_up),
 * so do we. */
static int jpeg_scale_for(unsigned w, unsigned h, int min_short, int min_long)
{
    unsigned s = w < h ? w : h, l = w < h ? h : w;
    for (int m = 1; m < 8; m++) {
        uint64_t os = ((uint64_t)s * (unsigned)m + 7) / 8, ol = ((uint64_t)l * (unsigned)m + 7) / 8;
        if (os >= (uint64_t)min_short && ol >= (uint64_t)min_long)
            return m;
    }
    return 8;
}

/* Whether the scans of a progressive file read so far are enough for an
 * output at DCT scale m/8 (image__decode_jpeg_scaled only). coef_bits[c][k]
 * is the number of low bits of coefficient k of component c not yet sent
 * (-1: nothing sent). We stop once every coefficient the scaled IDCT reads
 * lacks at most its last bit: an error of at most one quantisation step per
 * coefficient, inside the PSNR bound (test_image_prepare). At 1/8 libjpeg's
 * 1x1 IDCT reads the DC coefficient alone, so with libjpeg's own
 * progression only the first scan is decoded; at 2/8..4/8 every coefficient
 * counts and the last refinement scans (luma AC and DC, the largest and
 * slowest to decode) are skipped. Scripts without successive approximation
 * stop only once every band has been sent, i.e. at the same bytes. */
static int progressive_enough(const struct jpeg_decompress_struct *c, int m)
{
    for (int ci = 0; ci < c->num_components; ci++) {
        const int *bits = c->coef_bits[ci];
        for (int k = 0; k < (m == 1 ? 1 : DCTSIZE2); k++)
            if (bits[k] < 0 || bits[k] > 1)
                return 0;
    }
    return 1;
}

static enum ims_status decode_jpeg(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out, int min_short,
                                   int min_long, struct ims_error *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jerr jerr;
    struct jsrc src;
    struct jpeg_progress_mgr progress;
    struct image *volatile img = NULL;
    volatile enum ims_status st = IMS_OK;

    memset(&cinfo, 0, sizeof(cinfo));
    memset(&jerr, 0, sizeof(jerr));
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error_exit;
    jerr.pub.emit_message = on_emit_message;
    jerr.st = IMS_OK;
    if (setjmp(jerr.jb)) {
        st = ims_error_set(err, jerr.st == IMS_OK ? IMS_ERR_CORRUPT : jerr.st, "%s", jerr.msg);
        goto out;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.mem->max_memory_to_use = (long)image__jpeg_max_memory; /* see image.h */
    memset(&src, 0, sizeof(src));
    src.pub.init_source = src_init;
    src.pub.fill_input_buffer = src_fill;
    src.pub.skip_input_data = src_skip;
    src.pub.resync_to_restart = jpeg_resync_to_restart;
    src.pub.term_source = src_term;
    src.pub.next_input_byte = p;
    src.pub.bytes_in_buffer = n;
    src.data = p;
    src.n = n;
    src.jerr = &jerr;
    cinfo.src = &src.pub;
    progress.progress_monitor = on_progress;
    cinfo.progress = &progress;

    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        st = ims_error_set(err, IMS_ERR_CORRUPT, "corrupt JPEG: no image in the data stream");
        goto out;
    }
    enum image_mode mode;
    switch (cinfo.num_components) {
    case 1:
        mode = IMAGE_MODE_L;
        cinfo.out_color_space = JCS_GRAYSCALE;
        break;
    case 3:
        mode = IMAGE_MODE_RGB;
        cinfo.out_color_space = JCS_RGB;
        break;
    case 4:
        mode = IMAGE_MODE_CMYK;
        cinfo.out_color_space = JCS_CMYK;
        break;
    default:
        st = ims_error_set(err, IMS_ERR_UNSUPPORTED, "JPEG with %d colour components",
                           cinfo.num_components);
        goto out;
    }
    if ((st = image__check_dims(cinfo.image_width, cinfo.image_height, lim, "JPEG", err)) !=
        IMS_OK)
        goto out;
    info->width = (int)cinfo.image_width;
    info->height = (int)cinfo.image_height;
    info->mode = mode;
    if (!out)
        goto out;

    if (min_short > 0 && min_long > 0) { /* image__decode_jpeg_scaled */
        cinfo.scale_num = (unsigned)jpeg_scale_for(cinfo.image_width, cinfo.image_height,
                                                   min_short, min_long);
        cinfo.scale_denom = 8;
    }
    /* A progressive file on the scaled path is read scan by scan and its
     * output made once the scans read so far are enough (progressive_enough) */
    int early = min_short > 0 && cinfo.progressive_mode;
    if (early) {
        cinfo.buffered_image = TRUE;
        cinfo.do_block_smoothing = FALSE;
    }
    jpeg_calc_output_dimensions(&cinfo);
    struct image *im = NULL;
    if ((st = image_new((int)cinfo.output_width, (int)cinfo.output_height, mode, &im, err)) !=
        IMS_OK)
        goto out;
    img = im;
    jpeg_start_decompress(&cinfo);
    if (early) {
        for (;;) {
            int r = jpeg_consume_input(&cinfo);
            if (cinfo.input_scan_number > MAX_SCANS)
                on_progress((j_common_ptr)&cinfo); /* the same refusal as the full path */
            if (r == JPEG_REACHED_EOI ||
                (r == JPEG_SCAN_COMPLETED && progressive_enough(&cinfo, (int)cinfo.scale_num)))
                break;
            if (r == JPEG_SUSPENDED) /* our source never suspends; be safe anyway */
                ERREXIT(&cinfo, JERR_INPUT_EMPTY);
        }
        jpeg_start_output(&cinfo, cinfo.input_scan_number);
    }
    if ((int)cinfo.output_width != im->width || (int)cinfo.output_height != im->height ||
        cinfo.output_components != image_mode_bytes(mode)) {
        st = ims_error_set(err, IMS_ERR_INTERNAL, "JPEG decoder output does not match header");
        goto out;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = im->pixels + (size_t)cinfo.output_scanline * im->stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (mode == IMAGE_MODE_CMYK) {
        size_t total = im->stride * (size_t)im->height;
        for (size_t i = 0; i < total; i++)
            im->pixels[i] = (uint8_t)(255 - im->pixels[i]);
    }
    *out = im;
    img = NULL;
out:
    jpeg_destroy_decompress(&cinfo);
    image_free(img);
    return st;
}

enum ims_status image__decode_jpeg(const uint8_t *p, size_t n, const struct image_limits *lim,
                                   struct image_info *info, struct image **out,
                                   struct ims_error *err)
{
    return decode_jpeg(p, n, lim, info, out, 0, 0, err);
}

enum ims_status image__decode_jpeg_scaled(const uint8_t *p, size_t n,
                                          const struct image_limits *lim, int min_short,
                                          int min_long, struct image_info *info,
                                          struct image **out, struct ims_error *err)
{
    return decode_jpeg(p, n, lim, info, out, min_short > 0 ? min_short : 1,
                       min_long > 0 ? min_long : 1, err);
}
