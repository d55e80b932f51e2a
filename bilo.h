/* bilo — differentiable bilevel optimization in C. One include for the whole public API. */
#ifndef BILO_H
#define BILO_H

#include "bilo_tensor.h"
#include "bilo_autograd.h"
#include "bilo_nn.h"
#include "bilo_bilevel.h"
#include "bilo_tasks.h"

#endif
