/* A stand-in for NVML's C library (libnvidia-ml.so.1) for tests: the calls the probe makes through
 * either binding (ours through ctypes, nvidia-ml-py's pynvml), with the signatures of nvml.h.
 *
 * Two GPUs: 0 is an H100 (MIG not supported), 1 an A100 in MIG mode with MIG devices in slots 0 and 2
 * (slot 1 empty; GPU/compute instances 1/0 and 2/1). FAKE_NVML_SCENARIO in the environment:
 * "driver-not-loaded" makes init fail with NVML's code 9; "lost-gpu" makes GPU 1's handle answer
 * "GPU is lost" (15); "mig-pending" leaves the A100's MIG mode off until a reset (current 0,
 * pending 1); "hang-init" makes init take 3 s, as a driver in a bad state does.
 * fakeNvmlState() reports init/shutdown balance and how many calls came before init.
 * Build: cc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct fake_device {
    const char *uuid, *name, *bus_id;
    int major, minor;
    unsigned long long total, free;
    int mig_capable, mig_on;
    int parent;      /* -1 for a GPU, else the GPU's index */
    unsigned int gi, ci;
} fake_device;

static fake_device gpus[2] = {
    {"GPU-f598008f-b903-cab2-defc-eed33a0bb39a", "NVIDIA H100 80GB HBM3", "00000000:00:06.0", 9, 0,
     85520809984ULL, 85017493504ULL, 0, 0, -1, 0, 0},
    {"GPU-2b7c1e44-0d5a-4c1f-9e0b-7a1d2c3e4f50", "NVIDIA A100-SXM4-40GB", "00000000:41:00.0", 8, 0,
     42949672960ULL, 42314850304ULL, 1, 1, -1, 0, 0},
};
static fake_device migs[3] = {
    {"MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000001", "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "", 8, 0,
     20937965568ULL, 20600000000ULL, 0, 0, 1, 1, 0},
    {NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 1, 0, 0},
    {"MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000002", "NVIDIA A100-SXM4-40GB MIG 2g.10gb", "", 8, 0,
     10468982784ULL, 10300000000ULL, 0, 0, 1, 2, 1},
};

static int inits = 0, shutdowns = 0, before_init = 0;

static int scenario(const char *name) {
    const char *s = getenv("FAKE_NVML_SCENARIO");
    return s != NULL && strcmp(s, name) == 0;
}

#define NEED_INIT() do { if (inits <= shutdowns) { before_init++; return 1; } } while (0)

static nvmlReturn_t put_text(char *dst, unsigned int size, const char *src) {
    if (dst == NULL) return 2;
    if (strlen(src) + 1 > size) return 7;
    strcpy(dst, src);
    return 0;
}

static fake_device *dev(void *handle) { return (fake_device *)handle; }

nvmlReturn_t nvmlInit_v2(void) {
    if (scenario("driver-not-loaded")) return 9;
    if (scenario("hang-init")) sleep(3);
    inits++;
    return 0;
}
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) {
    if (inits <= shutdowns) return 1;
    shutdowns++;
    return 0;
}
const char *nvmlErrorString(nvmlReturn_t code) {
    switch (code) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    NEED_INIT();
    *count = 2;
    return 0;
}
nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    NEED_INIT();
    return put_text(version, length, "580.159.04");
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    NEED_INIT();
    *version = 13000;
    return 0;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) { return nvmlSystemGetCudaDriverVersion_v2(version); }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    NEED_INIT();
    if (index >= 2) return 2;
    if (index == 1 && scenario("lost-gpu")) return 15;
    *device = &gpus[index];
    return 0;
}
nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    NEED_INIT();
    return put_text(uuid, length, dev(device)->uuid);
}
nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    NEED_INIT();
    return put_text(name, length, dev(device)->name);
}
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(void *device, int *major, int *minor) {
    NEED_INIT();
    *major = dev(device)->major;
    *minor = dev(device)->minor;
    return 0;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *memory) {
    NEED_INIT();
    memory->total = dev(device)->total;
    memory->free = dev(device)->free;
    memory->used = dev(device)->total - dev(device)->free;
    return 0;
}
nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *device, nvmlPciInfo_t *pci) {
    NEED_INIT();
    if (dev(device)->parent >= 0) return 3;
    memset(pci, 0, sizeof *pci);
    strncpy(pci->busIdLegacy, dev(device)->bus_id + 4, sizeof pci->busIdLegacy - 1);
    strncpy(pci->busId, dev(device)->bus_id, sizeof pci->busId - 1);
    pci->bus = dev(device) == &gpus[0] ? 0 : 0x41;
    pci->device = dev(device) == &gpus[0] ? 6 : 0;
    pci->pciDeviceId = 0x233010de;
    return 0;
}
nvmlReturn_t nvmlDeviceGetMigMode(void *device, unsigned int *current, unsigned int *pending) {
    NEED_INIT();
    if (!dev(device)->mig_capable) return 3;
    *current = (unsigned int)dev(device)->mig_on;
    *pending = (unsigned int)dev(device)->mig_on;
    if (scenario("mig-pending")) *current = 0;
    return 0;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *device, unsigned int *count) {
    NEED_INIT();
    if (!dev(device)->mig_capable) return 3;
    *count = 3;
    return 0;
}
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *device, unsigned int index, void **mig) {
    NEED_INIT();
    if (dev(device) != &gpus[1]) return 3;
    if (index >= 3) return 2;
    if (migs[index].uuid == NULL) return 6;
    *mig = &migs[index];
    return 0;
}
nvmlReturn_t nvmlDeviceGetGpuInstanceId(void *device, unsigned int *id) {
    NEED_INIT();
    if (dev(device)->parent < 0) return 3;
    *id = dev(device)->gi;
    return 0;
}
nvmlReturn_t nvmlDeviceGetComputeInstanceId(void *device, unsigned int *id) {
    NEED_INIT();
    if (dev(device)->parent < 0) return 3;
    *id = dev(device)->ci;
    return 0;
}
/* not NVML: for tests, the balance of init/shutdown and calls made before init */
void fakeNvmlState(int *init_count, int *shutdown_count, int *early_calls) {
    *init_count = inits;
    *shutdown_count = shutdowns;
    *early_calls = before_init;
}
