// synodctl: the shell tool of synod. All logic is in cli.cc; this only wires the process to it.
#include <unistd.h>

#include <kj/exception.h>
#include <exception>
#include <iostream>

#include "clients/cli.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    int status = synod::clients::runSynodctl(args, std::cin, std::cout, std::cerr,
                                             isatty(STDOUT_FILENO) == 1, STDIN_FILENO);
    std::cout.flush();
    return status;
  } catch (const kj::Exception& e) {
    std::cout.flush();
    std::cerr << "synodctl: internal error: " << e.getDescription().cStr() << "\n";
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "synodctl: internal error: " << e.what() << "\n";
  }
  return synod::clients::EXIT_UNKNOWN;
}
