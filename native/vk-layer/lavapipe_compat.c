/*
 * sam2-lora lavapipe compatibility layer.
 *
 * Dawn refuses Vulkan devices that lack shader{Uniform,Sampled,Storage}...ArrayDynamicIndexing.
 * Mesa 22.3's lavapipe (Debian 12) reports the sampled/storage-image ones as false, so Dawn offers
 * no adapter on a GPU-less machine. Our compute shaders never index image arrays, so this layer
 * reports the four features as supported and clears them again at vkCreateDevice where the driver
 * really lacks them. Nothing else is touched.
 */
#include <string.h>
#include <stdlib.h>
#include <vulkan/vulkan.h>
#include <vulkan/vk_layer.h>

#define EXPORT __attribute__((visibility("default")))

/* Dispatchable handles start with the loader's dispatch-table pointer, shared by an instance and
 * its physical devices (and by a device and its queues): we key our tables by it. */
typedef void *DispatchKey;
static DispatchKey key_of(const void *handle) { return *(DispatchKey *)handle; }

typedef struct {
  DispatchKey key;
  PFN_vkGetInstanceProcAddr gipa;
  PFN_vkDestroyInstance destroy_instance;
  PFN_vkGetPhysicalDeviceFeatures get_features;
  PFN_vkGetPhysicalDeviceFeatures2 get_features2;
  PFN_vkGetPhysicalDeviceFeatures2 get_features2_khr;
  PFN_vkEnumerateDeviceExtensionProperties enum_device_ext;
} InstanceTable;

typedef struct {
  DispatchKey key;
  PFN_vkGetDeviceProcAddr gdpa;
  PFN_vkDestroyDevice destroy_device;
} DeviceTable;

#define MAX_TABLES 64
static InstanceTable instances[MAX_TABLES];
static DeviceTable devices[MAX_TABLES];

static InstanceTable *instance_table(DispatchKey key) {
  for (int i = 0; i < MAX_TABLES; i++)
    if (instances[i].key == key) return &instances[i];
  return NULL;
}

static DeviceTable *device_table(DispatchKey key) {
  for (int i = 0; i < MAX_TABLES; i++)
    if (devices[i].key == key) return &devices[i];
  return NULL;
}

static void force_features(VkPhysicalDeviceFeatures *f) {
  f->shaderUniformBufferArrayDynamicIndexing = VK_TRUE;
  f->shaderSampledImageArrayDynamicIndexing = VK_TRUE;
  f->shaderStorageBufferArrayDynamicIndexing = VK_TRUE;
  f->shaderStorageImageArrayDynamicIndexing = VK_TRUE;
}

/* Clears, in `req`, the four features that `real` does not have. */
static void strip_features(VkPhysicalDeviceFeatures *req, const VkPhysicalDeviceFeatures *real) {
  if (!real->shaderUniformBufferArrayDynamicIndexing) req->shaderUniformBufferArrayDynamicIndexing = VK_FALSE;
  if (!real->shaderSampledImageArrayDynamicIndexing) req->shaderSampledImageArrayDynamicIndexing = VK_FALSE;
  if (!real->shaderStorageBufferArrayDynamicIndexing) req->shaderStorageBufferArrayDynamicIndexing = VK_FALSE;
  if (!real->shaderStorageImageArrayDynamicIndexing) req->shaderStorageImageArrayDynamicIndexing = VK_FALSE;
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateInstance(const VkInstanceCreateInfo *info,
                                                           const VkAllocationCallbacks *alloc,
                                                           VkInstance *out) {
  VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)info->pNext;
  while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO &&
                   link->function == VK_LAYER_LINK_INFO))
    link = (VkLayerInstanceCreateInfo *)link->pNext;
  if (!link) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr next_gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;
  PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_gipa(VK_NULL_HANDLE, "vkCreateInstance");
  VkResult r = create(info, alloc, out);
  if (r != VK_SUCCESS) return r;
  InstanceTable *t = instance_table(NULL);
  if (!t) return VK_ERROR_OUT_OF_HOST_MEMORY;
  t->key = key_of(*out);
  t->gipa = next_gipa;
  t->destroy_instance = (PFN_vkDestroyInstance)next_gipa(*out, "vkDestroyInstance");
  t->get_features = (PFN_vkGetPhysicalDeviceFeatures)next_gipa(*out, "vkGetPhysicalDeviceFeatures");
  t->get_features2 = (PFN_vkGetPhysicalDeviceFeatures2)next_gipa(*out, "vkGetPhysicalDeviceFeatures2");
  t->get_features2_khr =
      (PFN_vkGetPhysicalDeviceFeatures2)next_gipa(*out, "vkGetPhysicalDeviceFeatures2KHR");
  return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL layer_DestroyInstance(VkInstance inst,
                                                        const VkAllocationCallbacks *alloc) {
  InstanceTable *t = instance_table(key_of(inst));
  if (!t) return;
  PFN_vkDestroyInstance destroy = t->destroy_instance;
  memset(t, 0, sizeof *t);
  destroy(inst, alloc);
}

static VKAPI_ATTR void VKAPI_CALL layer_GetPhysicalDeviceFeatures(VkPhysicalDevice pd,
                                                                  VkPhysicalDeviceFeatures *f) {
  InstanceTable *t = instance_table(key_of(pd));
  t->get_features(pd, f);
  force_features(f);
}

static void features2(PFN_vkGetPhysicalDeviceFeatures2 fn, VkPhysicalDevice pd,
                      VkPhysicalDeviceFeatures2 *f) {
  fn(pd, f);
  force_features(&f->features);
}

static VKAPI_ATTR void VKAPI_CALL layer_GetPhysicalDeviceFeatures2(VkPhysicalDevice pd,
                                                                   VkPhysicalDeviceFeatures2 *f) {
  InstanceTable *t = instance_table(key_of(pd));
  features2(t->get_features2 ? t->get_features2 : t->get_features2_khr, pd, f);
}

static VKAPI_ATTR void VKAPI_CALL layer_GetPhysicalDeviceFeatures2KHR(VkPhysicalDevice pd,
                                                                      VkPhysicalDeviceFeatures2 *f) {
  InstanceTable *t = instance_table(key_of(pd));
  features2(t->get_features2_khr ? t->get_features2_khr : t->get_features2, pd, f);
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateDevice(VkPhysicalDevice pd,
                                                         const VkDeviceCreateInfo *info,
                                                         const VkAllocationCallbacks *alloc,
                                                         VkDevice *out) {
  InstanceTable *it = instance_table(key_of(pd));
  VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)info->pNext;
  while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO &&
                   link->function == VK_LAYER_LINK_INFO))
    link = (VkLayerDeviceCreateInfo *)link->pNext;
  if (!link || !it) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr next_gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  PFN_vkGetDeviceProcAddr next_gdpa = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;
  PFN_vkCreateDevice create = (PFN_vkCreateDevice)next_gipa(VK_NULL_HANDLE, "vkCreateDevice");

  VkPhysicalDeviceFeatures real;
  it->get_features(pd, &real);

  /* Strip in place, call down, then restore the caller's structs as they were. */
  VkPhysicalDeviceFeatures *legacy = (VkPhysicalDeviceFeatures *)info->pEnabledFeatures;
  VkPhysicalDeviceFeatures2 *modern = NULL;
  for (VkBaseOutStructure *s = (VkBaseOutStructure *)info->pNext; s; s = s->pNext)
    if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2) modern = (VkPhysicalDeviceFeatures2 *)s;
  VkPhysicalDeviceFeatures saved_legacy, saved_modern;
  if (legacy) { saved_legacy = *legacy; strip_features(legacy, &real); }
  if (modern) { saved_modern = modern->features; strip_features(&modern->features, &real); }

  VkResult r = create(pd, info, alloc, out);

  if (legacy) *legacy = saved_legacy;
  if (modern) modern->features = saved_modern;
  if (r != VK_SUCCESS) return r;

  DeviceTable *dt = device_table(NULL);
  if (!dt) return VK_ERROR_OUT_OF_HOST_MEMORY;
  dt->key = key_of(*out);
  dt->gdpa = next_gdpa;
  dt->destroy_device = (PFN_vkDestroyDevice)next_gdpa(*out, "vkDestroyDevice");
  return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL layer_DestroyDevice(VkDevice dev, const VkAllocationCallbacks *alloc) {
  DeviceTable *t = device_table(key_of(dev));
  if (!t) return;
  PFN_vkDestroyDevice destroy = t->destroy_device;
  memset(t, 0, sizeof *t);
  destroy(dev, alloc);
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vkGetDeviceProcAddr(VkDevice dev, const char *name);

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vkGetInstanceProcAddr(VkInstance inst,
                                                                      const char *name) {
#define HOOK(fn, impl) if (!strcmp(name, #fn)) return (PFN_vkVoidFunction)impl
  HOOK(vkGetInstanceProcAddr, vkGetInstanceProcAddr);
  HOOK(vkGetDeviceProcAddr, vkGetDeviceProcAddr);
  HOOK(vkCreateInstance, layer_CreateInstance);
  HOOK(vkDestroyInstance, layer_DestroyInstance);
  HOOK(vkCreateDevice, layer_CreateDevice);
  HOOK(vkDestroyDevice, layer_DestroyDevice);
  HOOK(vkGetPhysicalDeviceFeatures, layer_GetPhysicalDeviceFeatures);
  HOOK(vkGetPhysicalDeviceFeatures2, layer_GetPhysicalDeviceFeatures2);
  HOOK(vkGetPhysicalDeviceFeatures2KHR, layer_GetPhysicalDeviceFeatures2KHR);
#undef HOOK
  if (!inst) return NULL;
  InstanceTable *t = instance_table(key_of(inst));
  return t ? t->gipa(inst, name) : NULL;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vkGetDeviceProcAddr(VkDevice dev, const char *name) {
  if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)vkGetDeviceProcAddr;
  if (!strcmp(name, "vkDestroyDevice")) return (PFN_vkVoidFunction)layer_DestroyDevice;
  DeviceTable *t = device_table(key_of(dev));
  return t ? t->gdpa(dev, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL
vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
  if (v->loaderLayerInterfaceVersion > 2) v->loaderLayerInterfaceVersion = 2;
  v->pfnGetInstanceProcAddr = vkGetInstanceProcAddr;
  v->pfnGetDeviceProcAddr = vkGetDeviceProcAddr;
  v->pfnGetPhysicalDeviceProcAddr = NULL;
  return VK_SUCCESS;
}
