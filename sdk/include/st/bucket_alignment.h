// Capability "bucket_alignment@1" (see st/model.h for capabilities): the pixel multiple of a family's
// aspect buckets. SimpleTuner's models set aspect_bucket_alignment themselves: Wan and Wan S2V force 32
// (Wan 2.2 TI2V 5B 64) over whatever the user wrote, with a warning; others keep the user's value and
// default to 64. A data backend asks for it while preparing; without it, buckets are aligned to the
// user's aspect_bucket_alignment, else to Encoders::spatial_multiple().
// Added in SDK ABI 5.0 (a header of its own, so that plugins that do not offer it need no rebuild).
#pragma once

#include "st/model.h"

namespace st::sdk {

class BucketAlignment : public Capability {
  public:
    static constexpr const char* kId = "bucket_alignment@1";
    ~BucketAlignment() override;
    /// Pixel multiple of bucket widths and heights; a multiple of spatial_multiple(). After load().
    virtual int bucket_alignment() const = 0;
    /// true: used whatever aspect_bucket_alignment says (the data backend warns when they differ);
    /// false: only the default when aspect_bucket_alignment is unset.
    virtual bool bucket_alignment_required() const = 0;
};

}  // namespace st::sdk
