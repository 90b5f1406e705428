/* A PKCS#11 proxy module for tests: every call goes to the real module (SoftHSM2),
 * except that a test can arm, from the same process, a fault at the C boundary that
 * SoftHSM2 itself never gives for a file token (tests/hsm/test_session_faults_mutants.py):
 *
 *   faulty_arm(which, count, rv)  the next `count` calls of one function return `rv`
 *                                 without reaching SoftHSM2 (which: 0 C_OpenSession,
 *                                 1 C_EncryptInit, 2 C_DecryptInit, 3 C_SignInit);
 *   faulty_twin(count)            the next `count` C_GenerateKey calls are each followed,
 *                                 in the same session, by a second real C_GenerateKey
 *                                 with the same template: a concurrent creator's key of
 *                                 the same label, a real object on the real token;
 *   faulty_calls(which)           how many calls of that function (or, 4, C_GenerateKey)
 *                                 the proxy has seen.
 *
 * Written by hand because no kept library offers a fault-injecting PKCS#11 proxy (p11-kit's
 * proxy and OpenSC's pkcs11-spy forward or log, they do not fail on demand). The function
 * list is the OASIS PKCS#11 v2.40 CK_FUNCTION_LIST: a CK_VERSION and 68 function pointers
 * in the standard order; only the indices below are replaced. C_Login, C_InitToken and
 * C_GetSessionInfo are also exported by name, as hsm._backend calls them through ctypes.
 *
 * Build: cc -shared -fPIC -o faulty_pkcs11.so faulty_pkcs11.c -ldl
 * The real module's path is $FAULTY_PKCS11_REAL.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef unsigned long ulong;
typedef ulong (*any_fn)(void);

struct version { unsigned char major, minor; };
struct function_list { struct version version; any_fn fn[68]; };

enum { I_OPEN_SESSION = 12, I_GET_SESSION_INFO = 15, I_LOGIN = 18, I_INIT_TOKEN = 9,
       I_ENCRYPT_INIT = 29, I_DECRYPT_INIT = 33, I_SIGN_INIT = 42, I_GENERATE_KEY = 58 };

#define CKR_GENERAL_ERROR 0x5UL

static struct function_list *real;
static struct function_list mine;
static int armed[4];
static ulong armed_rv[4];
static int twins;
static int calls[5];

static int load(void) {
    if (real) return 1;
    const char *path = getenv("FAULTY_PKCS11_REAL");
    if (!path) { fprintf(stderr, "faulty_pkcs11: FAULTY_PKCS11_REAL is not set\n"); return 0; }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "faulty_pkcs11: %s\n", dlerror()); return 0; }
    ulong (*get)(struct function_list **) = (ulong (*)(struct function_list **))dlsym(h, "C_GetFunctionList");
    if (!get || get(&real) != 0) { real = 0; return 0; }
    return 1;
}

static int fire(int which) {
    calls[which]++;
    if (armed[which] > 0) { armed[which]--; return 1; }
    return 0;
}

void faulty_arm(int which, int count, ulong rv) { armed[which] = count; armed_rv[which] = rv; }
void faulty_twin(int count) { twins = count; }
int faulty_calls(int which) { return calls[which]; }

static ulong open_session(ulong slot, ulong flags, void *app, void *notify, ulong *session) {
    if (fire(0)) return armed_rv[0];
    return ((ulong (*)(ulong, ulong, void *, void *, ulong *))real->fn[I_OPEN_SESSION])(
        slot, flags, app, notify, session);
}

typedef ulong (*init_fn)(ulong, void *, ulong);

static ulong encrypt_init(ulong s, void *mech, ulong key) {
    if (fire(1)) return armed_rv[1];
    return ((init_fn)real->fn[I_ENCRYPT_INIT])(s, mech, key);
}

static ulong decrypt_init(ulong s, void *mech, ulong key) {
    if (fire(2)) return armed_rv[2];
    return ((init_fn)real->fn[I_DECRYPT_INIT])(s, mech, key);
}

static ulong sign_init(ulong s, void *mech, ulong key) {
    if (fire(3)) return armed_rv[3];
    return ((init_fn)real->fn[I_SIGN_INIT])(s, mech, key);
}

typedef ulong (*gen_fn)(ulong, void *, void *, ulong, ulong *);

static ulong generate_key(ulong s, void *mech, void *tmpl, ulong count, ulong *key) {
    calls[4]++;
    ulong rv = ((gen_fn)real->fn[I_GENERATE_KEY])(s, mech, tmpl, count, key);
    if (rv == 0 && twins > 0) {
        twins--;
        ulong other = 0;
        ulong rv2 = ((gen_fn)real->fn[I_GENERATE_KEY])(s, mech, tmpl, count, &other);
        if (rv2 != 0) return rv2;
    }
    return rv;
}

ulong C_GetFunctionList(struct function_list **out) {
    if (!load()) return CKR_GENERAL_ERROR;
    mine = *real;
    mine.fn[I_OPEN_SESSION] = (any_fn)open_session;
    mine.fn[I_ENCRYPT_INIT] = (any_fn)encrypt_init;
    mine.fn[I_DECRYPT_INIT] = (any_fn)decrypt_init;
    mine.fn[I_SIGN_INIT] = (any_fn)sign_init;
    mine.fn[I_GENERATE_KEY] = (any_fn)generate_key;
    *out = &mine;
    return 0;
}

ulong C_Login(ulong s, ulong user, unsigned char *pin, ulong len) {
    if (!load()) return CKR_GENERAL_ERROR;
    return ((ulong (*)(ulong, ulong, unsigned char *, ulong))real->fn[I_LOGIN])(s, user, pin, len);
}

ulong C_InitToken(ulong slot, unsigned char *pin, ulong len, unsigned char *label) {
    if (!load()) return CKR_GENERAL_ERROR;
    return ((ulong (*)(ulong, unsigned char *, ulong, unsigned char *))real->fn[I_INIT_TOKEN])(
        slot, pin, len, label);
}

ulong C_GetSessionInfo(ulong s, void *info) {
    if (!load()) return CKR_GENERAL_ERROR;
    return ((ulong (*)(ulong, void *))real->fn[I_GET_SESSION_INFO])(s, info);
}
