/*
 * aioloop-nbd: serve disk images over NBD from IOThreads, with
 * qemu-storage-daemon's options (docs/nbd.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aioloop/main-loop.h>

#include "daemon.h"

static Daemon daemon_state;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: aioloop-nbd [options]\n"
"Serve disk images over NBD (fixed newstyle, structured replies,\n"
"base:allocation) from IOThreads.\n"
"\n"
"  --object iothread,id=ID[,poll-max-ns=N][,poll-grow=N][,poll-shrink=N]\n"
"           [,aio-max-batch=N][,thread-pool-min=N][,thread-pool-max=N]\n"
"  --blockdev driver=file,node-name=NODE,filename=PATH\n"
"           [,cache.direct=on|off][,aio=threads|native|io_uring]\n"
"           [,read-only=on|off]\n"
"  --export [type=nbd,]id=ID,node-name=NODE|file=PATH[,name=NAME]\n"
"           [,description=TEXT][,writable=on|off][,iothread=ID]\n"
"           [,cache=none|writeback][,aio=...][,multi-conn=on|off|auto]\n"
"  --nbd-server addr.type=inet,addr.host=HOST,addr.port=PORT\n"
"  --nbd-server addr.type=unix,addr.path=PATH   (repeatable;\n"
"           default: inet 127.0.0.1:10809) [,max-connections=N]\n"
"  --monitor PATH | chardev=ID   control socket (QMP-shaped JSON)\n"
"  --chardev socket,id=ID,path=PATH[,server=on][,wait=off]\n"
"  --pidfile PATH   written once the sockets listen\n"
"  -h, --help       this text\n"
"  -V, --version    the version\n"
"\n"
"SIGTERM/SIGINT: stop accepting, finish in-flight requests, flush\n"
"writable exports, exit 0.  All exports drain together: clients that\n"
"stop reading or sending are cut off after 5 s in all, not per export.\n");
}

static void on_signal(int sig)
{
    (void)sig;
    daemon_state.quit = 1;
    qemu_notify_event();
}

typedef struct Chardev {
    char *id;
    char *path;
} Chardev;

static void die(Error *err)
{
    error_report_err(err);
    exit(1);
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        fprintf(stderr, "aioloop-nbd: cannot write '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    return fclose(f);
}

int main(int argc, char **argv)
{
    enum { OPT_OBJECT = 256, OPT_BLOCKDEV, OPT_EXPORT, OPT_NBD_SERVER,
           OPT_MONITOR, OPT_CHARDEV, OPT_PIDFILE };
    static const struct option longopts[] = {
        { "object", required_argument, NULL, OPT_OBJECT },
        { "blockdev", required_argument, NULL, OPT_BLOCKDEV },
        { "export", required_argument, NULL, OPT_EXPORT },
        { "nbd-server", required_argument, NULL, OPT_NBD_SERVER },
        { "monitor", required_argument, NULL, OPT_MONITOR },
        { "chardev", required_argument, NULL, OPT_CHARDEV },
        { "pidfile", required_argument, NULL, OPT_PIDFILE },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    Daemon *d = &daemon_state;
    Chardev *chardevs = NULL;
    unsigned nchardevs = 0;
    const char *pidfile = NULL, *monitor = NULL;
    bool listening = false;
    struct sigaction sa = { .sa_handler = on_signal };
    Error *err = NULL;
    int opt, ret;

    if (qemu_init_main_loop(&err) < 0) {
        die(err);
    }
    d->srv = nbd_server_new();
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Options apply in order, as qemu-storage-daemon's. */
    while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        KeyVal kv = { 0 };

        switch (opt) {
        case OPT_OBJECT:
            if (keyval_parse(&kv, optarg, "qom-type", &err) < 0 ||
                daemon_object_add(d, &kv, &err) < 0) {
                die(err);
            }
            break;
        case OPT_BLOCKDEV:
            if (keyval_parse(&kv, optarg, NULL, &err) < 0 ||
                daemon_blockdev_add(d, &kv, &err) < 0) {
                die(err);
            }
            break;
        case OPT_EXPORT:
            if (keyval_parse(&kv, optarg, NULL, &err) < 0 ||
                daemon_export_add(d, &kv, &err) < 0) {
                die(err);
            }
            break;
        case OPT_NBD_SERVER:
            if (keyval_parse(&kv, optarg, NULL, &err) < 0 ||
                daemon_nbd_server_add(d, &kv, &err) < 0) {
                die(err);
            }
            listening = true;
            break;
        case OPT_CHARDEV: {
            const char *backend, *id, *path;
            Chardev *grown;

            if (keyval_parse(&kv, optarg, "backend", &err) < 0) {
                die(err);
            }
            backend = keyval_get(&kv, "backend");
            id = keyval_get(&kv, "id");
            path = keyval_get(&kv, "path");
            keyval_get(&kv, "server");
            keyval_get(&kv, "wait");
            if (!backend || strcmp(backend, "socket") || !id || !path) {
                error_setg(&err, "--chardev: only socket,id=ID,path=PATH");
                die(err);
            }
            if (keyval_check_unused(&kv, "chardev", &err) < 0) {
                die(err);
            }
            grown = realloc(chardevs, (nchardevs + 1) * sizeof(*chardevs));
            if (!grown) {
                error_setg(&err, "--chardev: out of memory");
                die(err);
            }
            chardevs = grown;
            chardevs[nchardevs].id = strdup(id);
            chardevs[nchardevs].path = strdup(path);
            if (!chardevs[nchardevs].id || !chardevs[nchardevs].path) {
                error_setg(&err, "--chardev: out of memory");
                die(err);
            }
            nchardevs++;
            break;
        }
        case OPT_MONITOR:
            if (!strncmp(optarg, "chardev=", 8)) {
                monitor = NULL;
                for (unsigned i = 0; i < nchardevs; i++) {
                    if (!strcmp(chardevs[i].id, optarg + 8)) {
                        monitor = chardevs[i].path;
                    }
                }
                if (!monitor) {
                    error_setg(&err, "--monitor: no chardev '%s'",
                               optarg + 8);
                    die(err);
                }
            } else {
                monitor = optarg;
            }
            if (monitor_start(d, monitor, &err) < 0) {
                die(err);
            }
            break;
        case OPT_PIDFILE:
            pidfile = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("aioloop-nbd %s\n", AIOLOOP_NBD_VERSION);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
        keyval_free(&kv);
    }
    if (optind < argc) {
        fprintf(stderr, "aioloop-nbd: unexpected argument '%s'\n",
                argv[optind]);
        return 1;
    }
    if (!listening) {
        if (nbd_server_listen(d->srv, "inet:127.0.0.1:10809", &err) < 0) {
            die(err);
        }
    }
    if (pidfile && write_pidfile(pidfile) < 0) {
        return 1;
    }

    while (!d->quit) {
        main_loop_wait(false);
    }

    monitor_stop();
    ret = nbd_server_shutdown(d->srv);
    if (ret < 0) {
        fprintf(stderr, "aioloop-nbd: flushing an export failed: %s\n",
                strerror(-ret));
    }
    nbd_server_free(d->srv);
    for (unsigned i = 0; i < d->niothreads; i++) {
        iothread_destroy(d->iothreads[i]);
    }
    free(d->iothreads);
    for (unsigned i = 0; i < d->nblockdevs; i++) {
        free(d->blockdevs[i].node_name);
        free(d->blockdevs[i].filename);
    }
    free(d->blockdevs);
    for (unsigned i = 0; i < nchardevs; i++) {
        free(chardevs[i].id);
        free(chardevs[i].path);
    }
    free(chardevs);
    if (pidfile) {
        unlink(pidfile);
    }
    return ret < 0 ? 1 : 0;
}
