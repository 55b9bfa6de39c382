/* vivid-ctl: the two things the camera VM scenarios need from a V4L2 device besides edgeclass,
 * in one static binary (the VM has no v4l-utils):
 *
 *   vivid-ctl DEVICE set NAME=VALUE...   set controls by name, as v4l2-ctl spells them
 *                                        ("Disconnect" -> disconnect; buttons take any value)
 *   vivid-ctl DEVICE grab-rgb24 W H FILE  capture one RGB24 WxH frame and write it as a PPM (P6),
 *                                        byte for byte as the driver delivered it
 *
 * Exit status 0 on success, 1 with a message naming the device and call on failure. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *device;

static int fail(const char *what) {
  fprintf(stderr, "vivid-ctl: %s: %s: %s\n", device, what, strerror(errno));
  return 1;
}

/* "Inject V4L2_BUF_FLAG_ERROR" -> "inject_v4l2_buf_flag_error", like v4l2-ctl. */
static void control_key(const char *name, char *out, size_t size) {
  size_t n = 0;
  int gap = 0;
  for (; *name && n + 1 < size; name++) {
    if (isalnum((unsigned char)*name)) {
      if (gap && n > 0) out[n++] = '_';
      if (n + 1 < size) out[n++] = (char)tolower((unsigned char)*name);
      gap = 0;
    } else {
      gap = 1;
    }
  }
  out[n] = 0;
}

static int set_control(int fd, const char *assignment) {
  const char *eq = strchr(assignment, '=');
  if (!eq) {
    fprintf(stderr, "vivid-ctl: expected NAME=VALUE, got %s\n", assignment);
    return 1;
  }
  struct v4l2_queryctrl query = {.id = V4L2_CTRL_FLAG_NEXT_CTRL};
  while (ioctl(fd, VIDIOC_QUERYCTRL, &query) == 0) {
    char key[64];
    control_key((const char *)query.name, key, sizeof key);
    if (strlen(key) == (size_t)(eq - assignment) && !strncmp(key, assignment, eq - assignment)) {
      struct v4l2_control control = {.id = query.id, .value = atoi(eq + 1)};
      if (ioctl(fd, VIDIOC_S_CTRL, &control) != 0) return fail(assignment);
      return 0;
    }
    query.id |= V4L2_CTRL_FLAG_NEXT_CTRL;
  }
  fprintf(stderr, "vivid-ctl: %s has no control %.*s\n", device, (int)(eq - assignment), assignment);
  return 1;
}

static int grab_rgb24(int fd, unsigned width, unsigned height, const char *path) {
  struct v4l2_format format = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
  format.fmt.pix.width = width;
  format.fmt.pix.height = height;
  format.fmt.pix.pixelformat = V4L2_PIX_FMT_RGB24;
  format.fmt.pix.field = V4L2_FIELD_NONE;
  if (ioctl(fd, VIDIOC_S_FMT, &format) != 0) return fail("VIDIOC_S_FMT");
  if (format.fmt.pix.pixelformat != V4L2_PIX_FMT_RGB24 || format.fmt.pix.width != width ||
      format.fmt.pix.height != height || format.fmt.pix.bytesperline != width * 3) {
    fprintf(stderr, "vivid-ctl: %s does not deliver packed RGB24 %ux%u\n", device, width, height);
    return 1;
  }
  struct v4l2_requestbuffers request = {
      .count = 1, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
  if (ioctl(fd, VIDIOC_REQBUFS, &request) != 0 || request.count < 1) return fail("VIDIOC_REQBUFS");
  struct v4l2_buffer buffer = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
  if (ioctl(fd, VIDIOC_QUERYBUF, &buffer) != 0) return fail("VIDIOC_QUERYBUF");
  void *data = mmap(NULL, buffer.length, PROT_READ, MAP_SHARED, fd, buffer.m.offset);
  if (data == MAP_FAILED) return fail("mmap");
  if (ioctl(fd, VIDIOC_QBUF, &buffer) != 0) return fail("VIDIOC_QBUF");
  enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  if (ioctl(fd, VIDIOC_STREAMON, &type) != 0) return fail("VIDIOC_STREAMON");
  if (ioctl(fd, VIDIOC_DQBUF, &buffer) != 0) return fail("VIDIOC_DQBUF");
  FILE *out = fopen(path, "wb");
  if (!out) return fail(path);
  fprintf(out, "P6\n%u %u\n255\n", width, height);
  size_t size = (size_t)width * height * 3;
  if (buffer.bytesused < size || fwrite(data, 1, size, out) != size || fclose(out) != 0)
    return fail(path);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: vivid-ctl DEVICE set NAME=VALUE... | DEVICE grab-rgb24 W H FILE\n");
    return 64;
  }
  device = argv[1];
  int fd = open(device, O_RDWR);
  if (fd < 0) return fail("open");
  if (!strcmp(argv[2], "set")) {
    for (int i = 3; i < argc; i++)
      if (set_control(fd, argv[i])) return 1;
    return 0;
  }
  if (!strcmp(argv[2], "grab-rgb24") && argc == 6)
    return grab_rgb24(fd, (unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]), argv[5]);
  fprintf(stderr, "vivid-ctl: unknown command %s\n", argv[2]);
  return 64;
}
