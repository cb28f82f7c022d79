/* The kernel's ceiling for one-connection-per-message load on this machine: the most trivial
 * SMTP-shaped exchange there is. `ceiling server PORT` accepts with one blocking thread per
 * connection, writes a 220 greeting and closes; `ceiling client PORT THREADS SECONDS` runs
 * THREADS blocking loops of connect, read the greeting, wait for the server's close, close, and
 * prints cycles/s. No SMTP, no parsing: what is left is TCP setup and teardown on loopback,
 * which bounds any connection-per-message benchmark here (bench/tools/README.md). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static atomic_long cycles;
static atomic_int stop;

static void *serve(void *arg) {
  int fd = (int)(long)arg;
  static const char greeting[] = "220 ceiling ESMTP\r\n";
  if (write(fd, greeting, sizeof greeting - 1) < 0) perror("write");
  close(fd);
  return NULL;
}

static void *drive(void *arg) {
  (void)arg;
  char buffer[256];
  while (!atomic_load(&stop)) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&target, sizeof target) != 0) {
      perror("connect");
      exit(1);
    }
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
    close(fd);
    atomic_fetch_add(&cycles, 1);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ceiling server PORT | client PORT THREADS SECONDS\n");
    return 2;
  }
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((unsigned short)atoi(argv[2]));
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (strcmp(argv[1], "server") == 0) {
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&target, sizeof target) != 0 ||
        listen(listener, 4096) != 0) {
      perror("listen");
      return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
      int fd = accept(listener, NULL, NULL);
      pthread_t thread;
      if (fd >= 0 && pthread_create(&thread, &attr, serve, (void *)(long)fd) != 0) close(fd);
    }
  }
  if (argc < 5) return 2;
  int threads = atoi(argv[3]);
  double seconds = atof(argv[4]);
  pthread_t *pool = calloc((size_t)threads, sizeof *pool);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; ++i) pthread_create(&pool[i], NULL, drive, NULL);
  usleep((useconds_t)(seconds * 1e6));
  atomic_store(&stop, 1);
  for (int i = 0; i < threads; ++i) pthread_join(pool[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%.0f\n", (double)atomic_load(&cycles) / elapsed);
  return 0;
}
