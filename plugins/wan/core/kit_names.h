// The Wan core builds on the family kit (kit/): the VAE, UMT5, the tokenizer and the Hugging Face
// encoder helpers moved there so that other families reuse them. Their names stay usable in the Wan
// core's namespace (st::plugins::wan::WanVAE is st::kit::WanVAE).
#pragma once

namespace st::kit {}

namespace st::plugins::wan {
using namespace st::kit;
}  // namespace st::plugins::wan
